import { afterAll, afterEach, beforeAll, expect } from 'vitest'

/**
 * Fail every test of the file during which the process saw an uncaught
 * exception or an unhandled rejection (vitest reports them too, but against no
 * test in particular). Call once at the top level of a test file; returns the
 * list, for tests that also check it mid-way.
 */
export function failOnUncaught(): unknown[] {
  const uncaught: unknown[] = []
  const record = (err: unknown): void => void uncaught.push(err)
  beforeAll(() => {
    process.on('uncaughtException', record)
    process.on('unhandledRejection', record)
  })
  afterAll(() => {
    process.off('uncaughtException', record)
    process.off('unhandledRejection', record)
  })
  afterEach(() => expect(uncaught).toEqual([]))
  return uncaught
}
