/**
 * What a started demo service exposes to whoever runs it (its standalone entry point, the demo, the
 * tests): its name, its HTTP app (served on a port or called in process) and its database.
 *
 * @since 0.1.0
 */
import type { HttpApp } from "../http/HttpApp.ts"
import type { ServiceDatabase } from "./ServiceDatabase.ts"

/** A demo service running in the current scope; closing the scope stops it. */
export interface RunningService {
  readonly name: string
  readonly http: HttpApp
  readonly database: ServiceDatabase["Service"]
}
