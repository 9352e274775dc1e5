/**
 * Equality of JSON values whatever the order of their objects' keys (a store may give them in another
 * order than a schema encodes them, e.g. PostgreSQL's `jsonb`), so that a no-op write is recognized on
 * every store.
 *
 * @since 0.1.0
 */
import type { Schema } from "effect"

/** Whether two JSON values are equal, whatever the order of their objects' keys. */
export const sameJson = (a: Schema.Json, b: Schema.Json): boolean => {
  if (a === b) return true
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false
    return a.every((item, i) => {
      const other = b[i]
      return other !== undefined && sameJson(item, other)
    })
  }
  const keys = Object.keys(a)
  if (keys.length !== Object.keys(b).length) return false
  const right = new Map(Object.entries(b))
  return Object.entries(a).every(([key, value]) => {
    const other = right.get(key)
    return other !== undefined && sameJson(value, other)
  })
}
