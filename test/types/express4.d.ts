// Express 4 is installed as the alias `express4` for the Express 4/5 test matrix. Its API, as
// far as the tests use it, is the one @types/express describes.
declare module 'express4' {
  import express from 'express'

  export = express
}
