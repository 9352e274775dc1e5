# The demo services, accounts and directory, in one image; the command picks the service.
#
#   docker build -t entity-sync-services .
#   docker run -p 127.0.0.1:3001:3001 -e HOST=0.0.0.0 -e ADMIN_TOKEN=… \
#     -e DATABASE_URL=postgres://… -e AMQP_URL=amqp://… entity-sync-services
#   docker run -p 127.0.0.1:3002:3002 -e HOST=0.0.0.0 -e ADMIN_TOKEN=… \
#     -e DATABASE_URL=postgres://… -e AMQP_URL=amqp://… entity-sync-services node --import tsx services/directory/main.ts
#
# A service listens on 127.0.0.1 unless HOST says otherwise: in a container, HOST=0.0.0.0 makes the
# published port reach it. Without ADMIN_TOKEN its /admin/* routes are disabled. Settings are environment
# variables (README, "Running them"). docker-compose.yml runs both with PostgreSQL and RabbitMQ.
FROM node:20-bookworm-slim

WORKDIR /app

# dependencies first, for the layer cache (tsx, a dev dependency, runs the TypeScript sources)
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund && npm cache clean --force

COPY tsconfig.json ./
COPY src ./src
COPY services ./services

ENV NODE_ENV=production
USER node
EXPOSE 3001 3002

# node runs as PID 1 and handles SIGTERM itself: it finishes in-flight requests, stops consuming
# (unsettled messages go back to the queue), closes the broker and the database, and exits with 0.
CMD ["node", "--import", "tsx", "services/accounts/main.ts"]
