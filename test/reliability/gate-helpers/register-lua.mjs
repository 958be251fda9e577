// `node --import tsx --import ./register-lua.mjs server.ts`: registers lua-hooks.mjs.
import { register } from 'node:module'

register('./lua-hooks.mjs', import.meta.url)
