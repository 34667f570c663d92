/**
 * The guard rules: what the forest cannot see before it has learned what normal is, and
 * what needs no model to call abuse. Each reads the counts the client's row keeps
 * (features.ts) and acts from a client's first requests. A rule that fires scores 1.
 */
import type { AnomalyConfig } from './options.js'
import { F, type ClientTable } from './features.js'

/** The rules, in the order they are checked; a verdict names the first that fires. */
export const RULES = ['flood', 'scanner', 'bruteForce', 'enumeration', 'scraper'] as const
export type RuleName = (typeof RULES)[number]

/** The rules' thresholds; `undefined` for a rule turned off. */
export interface RuleSettings {
  readonly flood: { readonly requests: number; readonly seconds: number } | undefined
  readonly scanner: { readonly notFound: number; readonly ratio: number } | undefined
  readonly bruteForce: { readonly failures: number } | undefined
  readonly enumeration: { readonly ids: number; readonly ratio: number } | undefined
  readonly scraper: { readonly pages: number } | undefined
}

/**
 * @example
 * ruleSettings({ ...rules, scanner: false }).scanner // undefined
 */
export function ruleSettings(rules: AnomalyConfig['rules']): RuleSettings {
  const on = <T>(r: T | false): T | undefined => (r === false ? undefined : r)
  return {
    flood: on(rules.flood),
    scanner: on(rules.scanner),
    bruteForce: on(rules.bruteForce),
    enumeration: on(rules.enumeration),
    scraper: on(rules.scraper),
  }
}

/** Most browsers one address is taken to hold: a NAT's thresholds grow with it, up to this. */
const MAX_NAT_SCALE = 16
/** Share of assets from which an address looks like browsers loading pages (a NAT), not a tool rotating its user agent. */
const BROWSER_ASSETS = 0.2

/** How many people an address seems to hold: its browsers, if it loads pages as browsers do; 1 otherwise. */
export function people(table: ClientTable, slot: number): number {
  const r = table.rows
  const o = slot * F.FIELDS
  if ((r[o + F.ASSET] as number) < BROWSER_ASSETS * (r[o + F.N_LONG] as number)) return 1
  return Math.min(MAX_NAT_SCALE, Math.max(1, table.agents(slot) / 2))
}

/**
 * The first rule the client's row breaks, as its index in `RULES` + 1; 0 for none.
 *
 * @example
 * const fired = checkRules(table, slot, settings)
 * if (fired > 0) console.log(RULES[fired - 1])
 */
export function checkRules(table: ClientTable, slot: number, s: RuleSettings): number {
  const r = table.rows
  const o = slot * F.FIELDS
  if (s.flood !== undefined && (r[o + F.FLOOD] as number) > s.flood.requests) {
    // Many browsers behind one address (a NAT, an office) add up: the threshold grows with them.
    if ((r[o + F.FLOOD] as number) > s.flood.requests * people(table, slot)) return 1
  }
  if (s.scanner !== undefined) {
    // A decayed count never quite reaches n after n events: the n-th 404 within seconds reads as n − 0.1 or so.
    const notFound = r[o + F.N404_MID] as number
    if (notFound > s.scanner.notFound - 1 && notFound >= s.scanner.ratio * (r[o + F.N_MID] as number))
      return 2
  }
  if (s.bruteForce !== undefined && (r[o + F.FAIL_STREAK] as number) >= s.bruteForce.failures) return 3
  if (s.enumeration !== undefined) {
    const walked = r[o + F.ENUM_N] as number
    if (
      walked >= s.enumeration.ids &&
      (r[o + F.ENUM_FAIL] as number) >= s.enumeration.ratio * walked &&
      table.distinctIds(slot) >= s.enumeration.ids * 0.8
    )
      return 4
  }
  if (
    s.scraper !== undefined &&
    (r[o + F.PAGES_MID] as number) > s.scraper.pages &&
    table.distinctPaths(slot) >= s.scraper.pages / 3
  ) {
    // Pages from many browsers behind one address are not one scraper.
    if ((r[o + F.PAGES_MID] as number) > s.scraper.pages * people(table, slot)) return 5
  }
  return 0
}
