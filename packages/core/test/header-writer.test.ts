import { IncomingMessage, ServerResponse } from 'node:http'
import { Socket } from 'node:net'
import { describe, expect, it } from 'vitest'
import { createHeaderWriter } from '../src/node/header-store.js'

const response = (): ServerResponse => new ServerResponse(new IncomingMessage(new Socket()))

describe('header writer', () => {
  const list = [
    ['x-frame-options', 'DENY'],
    ['vary', 'Origin'],
  ] as const

  it('sets headers Node sees as its own, and removes the one asked', () => {
    const write = createHeaderWriter('x-powered-by')
    const res = response()
    res.setHeader('X-Powered-By', 'Express')
    write(res, list)
    expect(res.getHeader('x-frame-options')).toBe('DENY')
    expect(res.hasHeader('x-powered-by')).toBe(false)
    expect(res.getHeaderNames().sort()).toEqual(['vary', 'x-frame-options'])
    res.removeHeader('vary')
    expect(res.hasHeader('vary')).toBe(false)
  })

  it('shares nothing between responses', () => {
    const write = createHeaderWriter(undefined)
    const a = response()
    const b = response()
    write(a, list)
    write(b, list)
    a.appendHeader('vary', 'Accept-Encoding')
    expect(a.getHeader('vary')).toEqual(['Origin', 'Accept-Encoding'])
    expect(b.getHeader('vary')).toBe('Origin')
    expect(list[1]).toEqual(['vary', 'Origin'])
  })

  it('keeps fields set before it, and answers for names an object prototype would hold as Node does', () => {
    const write = createHeaderWriter('x-powered-by')
    const res = response()
    res.setHeader('Content-Type', 'text/plain')
    res.setHeader('X-Powered-By', 'Express')
    write(res, list)
    write(res, list) // twice: the same store, nothing lost
    expect(res.getHeaders()).toEqual({
      'content-type': 'text/plain',
      'x-frame-options': 'DENY',
      vary: 'Origin',
    })
    for (const name of ['constructor', 'toString', 'hasOwnProperty', '__proto__'])
      expect(res.hasHeader(name)).toBe(false)
    res.setHeader('__proto__', 'a')
    res.setHeader('Constructor', 'b')
    expect(res.getHeader('__proto__')).toBe('a')
    expect(res.getHeader('constructor')).toBe('b')
    expect(res.getHeaderNames()).toContain('__proto__')
    res.removeHeader('content-type')
    res.writeHead(204)
    const head = (res as unknown as { _header: string })._header
    expect(head).toMatch(/\r\n__proto__: a\r\nConstructor: b\r\n/)
    expect(head).not.toMatch(/content-type/i)
  })

  it('reaches the wire with writeHead', () => {
    const write = createHeaderWriter(undefined)
    const res = response()
    write(res, list)
    res.writeHead(200, { 'content-type': 'text/plain' })
    const head = (res as unknown as { _header: string })._header
    expect(head).toMatch(/\r\nx-frame-options: DENY\r\n/)
    expect(head).toMatch(/\r\ncontent-type: text\/plain\r\n/)
  })
})
