/**
 * `npm run start:directory`: the directory service alone, configured by the environment (see
 * `runtime/Standalone.ts`): `PORT` (3002), `DATABASE_URL`, `AMQP_URL`, the library's settings, and
 * `OTEL_EXPORTER_OTLP_ENDPOINT` to export traces (`Tracing.layerOtlpFromEnv`; `OTEL_SERVICE_NAME` defaults to
 * "directory").
 *
 * @since 0.1.0
 */
import * as Standalone from "../runtime/Standalone.ts"
import * as DirectoryService from "./DirectoryService.ts"

Standalone.runMain(DirectoryService)
