/**
 * `npm run start:accounts`: the accounts service alone, configured by the environment (see
 * `runtime/Standalone.ts`): `PORT` (3001), `DATABASE_URL`, `AMQP_URL`, the library's settings, and
 * `OTEL_EXPORTER_OTLP_ENDPOINT` to export traces (`Tracing.layerOtlpFromEnv`; `OTEL_SERVICE_NAME` defaults to
 * "accounts").
 *
 * @since 0.1.0
 */
import * as Standalone from "../runtime/Standalone.ts"
import * as AccountsService from "./AccountsService.ts"

Standalone.runMain(AccountsService)
