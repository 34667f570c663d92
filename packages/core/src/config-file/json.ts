/**
 * Where strict JSON (RFC 8259) first goes wrong. The YAML parser reads JSON too, but
 * it also takes what JSON refuses (comments, bare words, trailing commas), and
 * `JSON.parse` says neither where nor what without quoting the text (which may hold
 * a secret). This scanner finds the first error's offset and says what was expected,
 * never what was there. Iterative: a deep nesting cannot overflow the stack.
 */
export interface JsonSyntaxError {
  readonly offset: number
  readonly message: string
}

const WS = new Set([0x20, 0x09, 0x0a, 0x0d])
const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y
const ESCAPE = /["\\/bfnrt]|u[0-9a-fA-F]{4}/y

/**
 * The first syntax error of `text` as JSON, or `undefined` when it is valid JSON.
 *
 * @example
 * checkJson('{"a": 1,}') // { offset: 8, message: 'expected a string key' }
 */
export function checkJson(text: string): JsonSyntaxError | undefined {
  let i = 0
  const fail = (message: string, at = i): JsonSyntaxError => ({ offset: Math.min(at, text.length), message })
  const skip = (): void => {
    while (i < text.length && WS.has(text.charCodeAt(i))) i++
  }
  // A BOM is not JSON, but editors write one: tolerate it as JSON.parse does not, once, at the start.
  if (text.charCodeAt(0) === 0xfeff) i = 1

  const string = (): JsonSyntaxError | undefined => {
    i++ // the opening quote
    for (;;) {
      if (i >= text.length) return fail('unterminated string')
      const c = text.charCodeAt(i)
      if (c === 0x22) {
        i++
        return undefined
      }
      if (c < 0x20) return fail('control character in a string (escape it)')
      if (c === 0x5c) {
        ESCAPE.lastIndex = i + 1
        const m = ESCAPE.exec(text)
        if (m === null) return fail('bad escape in a string')
        i = ESCAPE.lastIndex
        continue
      }
      i++
    }
  }

  // What the value just read is inside: '{' or '[' for each open container.
  const stack: string[] = []
  for (;;) {
    // Read one value.
    skip()
    if (i >= text.length) return fail('unexpected end of input: expected a value')
    const c = text[i]
    if (c === '{' || c === '[') {
      i++
      skip()
      const close = c === '{' ? '}' : ']'
      if (text[i] === close) {
        i++
      } else {
        stack.push(c)
        if (c === '{') {
          const err = key()
          if (err !== undefined) return err
        }
        continue
      }
    } else if (c === '"') {
      const err = string()
      if (err !== undefined) return err
    } else if (c === 't' || c === 'f' || c === 'n') {
      const word = c === 't' ? 'true' : c === 'f' ? 'false' : 'null'
      if (!text.startsWith(word, i)) return fail('expected a value (a string needs double quotes)')
      i += word.length
    } else {
      NUMBER.lastIndex = i
      if (NUMBER.exec(text) === null) return fail('expected a value (a string needs double quotes)')
      i = NUMBER.lastIndex
    }
    // After a value: a separator, a closer, or the end.
    for (;;) {
      skip()
      const open = stack[stack.length - 1]
      if (open === undefined)
        return i >= text.length ? undefined : fail('unexpected text after the JSON value')
      if (i >= text.length)
        return fail(`unexpected end of input: expected ',' or '${open === '{' ? '}' : ']'}'`)
      const d = text[i]
      if (d === ',') {
        i++
        if (open === '{') {
          skip()
          const err = key()
          if (err !== undefined) return err
        }
        break
      }
      if ((open === '{' && d === '}') || (open === '[' && d === ']')) {
        i++
        stack.pop()
        continue
      }
      return fail(`expected ',' or '${open === '{' ? '}' : ']'}'`)
    }
  }

  // A member's key and its colon; the value is read by the loop.
  function key(): JsonSyntaxError | undefined {
    skip()
    if (text[i] !== '"') return fail('expected a string key (in double quotes)')
    const err = string()
    if (err !== undefined) return err
    skip()
    if (text[i] !== ':') return fail("expected ':' after the key")
    i++
    return undefined
  }
}
