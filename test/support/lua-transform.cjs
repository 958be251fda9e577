'use strict'
// Jest transformer: a .lua file's text becomes its default export, as tsup's text loader does.
module.exports = {
  process(sourceText) {
    return {
      code: `module.exports = { __esModule: true, default: ${JSON.stringify(sourceText)} };`,
    }
  },
}
