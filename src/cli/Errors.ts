/**
 * The admin CLI's failures, each with a message that says what to do, and the process exit code it ends
 * with: 2 for a usage error (a bad flag), 1 for an operation that could not be done, 3 for a canary replay
 * whose events were dead-lettered again, 130 for an interrupted run.
 *
 * @since 0.2.0
 */
import { Schema } from "effect"

/** A flag or argument that does not decode; the message names it and the expected form. */
export class UsageError extends Schema.TaggedError<UsageError>()("UsageError", {
  message: Schema.String
}) {}

/** An operation that could not be done (unreachable server, missing tables…); the message says why. */
export class OperationFailed extends Schema.TaggedError<OperationFailed>()("OperationFailed", {
  message: Schema.String
}) {}

/** A canary replay whose events were dead-lettered again, or did not settle in time. */
export class CanaryFailed extends Schema.TaggedError<CanaryFailed>()("CanaryFailed", {
  message: Schema.String
}) {}

/** Every failure a command reports. */
export type CliFailure = UsageError | OperationFailed | CanaryFailed

/** The exit codes of the CLI. */
export const exitCodes = {
  ok: 0,
  failed: 1,
  usage: 2,
  canary: 3,
  interrupted: 130
} as const
