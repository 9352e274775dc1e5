/**
 * Ambient declarations for compiling `Embedded.ts` only: PGlite's published types name three globals of
 * `@types/emscripten`, which it does not depend on, so with `skipLibCheck: false` importing PGlite does not
 * compile without them. A `.d.ts` file is not emitted, so they never reach the package's types (which do
 * not import PGlite's). These empty declarations merge with `@types/emscripten`'s, should it be added.
 */
export {}

declare global {
  namespace Emscripten {
    interface FileSystemType {}
  }
  interface EmscriptenModule {}
  namespace FS {
    /** Makes `FS` a value, as `typeof FS` in PGlite's types requires. */
    const pgliteTypes: unique symbol
  }
}
