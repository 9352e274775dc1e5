/**
 * Statements of the write path whose SQL text is compiled once, when a store is made, instead of at every
 * call: a call sends the same text (the same string, so the driver's cache of prepared statements finds
 * it without hashing a new one) with its own arguments. Built from an ordinary `sql` template, so the
 * text is exactly what the template compiles to.
 *
 * @since 0.2.0
 */
import type { SqlClient, Statement } from "effect/sql"

/** Marks where argument `index` goes in the compiled text; no argument of the library looks like it. */
const marker = (index: number) => `\u0000entity-sync argument ${index}\u0000`

/**
 * Compiles `build`'s statement once, with a marker in place of each of its parameters (`build.length` of
 * them), and gives a function that makes the statement with the arguments in their places. Parameters of
 * the template that are not arguments (constants) keep their value. Arguments are bound as parameters,
 * never spliced into the text.
 */
export const compileOnce = <Args extends ReadonlyArray<unknown>, A extends object>(
  sql: SqlClient.SqlClient,
  build: (...markers: ReadonlyArray<string>) => Statement.Statement<A>
): (...args: Args) => Statement.Statement<A> => {
  const markers = Array.from({ length: build.length }, (_, index) => marker(index))
  const [text, compiled] = build(...markers).compile()
  const slots = compiled.map((value) => {
    const index = typeof value === "string" ? markers.indexOf(value) : -1
    return index < 0 ? { constant: value } : { index }
  })
  const unused = markers.findIndex((_, index) => !slots.some((slot) => "index" in slot && slot.index === index))
  if (unused >= 0) throw new Error(`compileOnce: argument ${unused} is not a parameter of the statement`)
  return (...args) => sql.unsafe<A>(text, slots.map((slot) => ("index" in slot ? args[slot.index] : slot.constant)))
}
