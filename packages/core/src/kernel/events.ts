/**
 * The typed event bus: every state change, verdict and serve of every engine is an
 * event on one bus; audit, metrics, logs and the dashboard's live feed subscribe.
 *
 * Engines declare their events by declaration merging on {@link AegisEvents}, in
 * their own folder, so the bus never imports an engine:
 *
 * ```ts
 * declare module '../kernel/events.js' {
 *   interface AegisEvents {
 *     'upstream.health': { readonly route: string; readonly upstream: string; readonly healthy: boolean }
 *   }
 * }
 * ```
 *
 * Modelled on cockatiel's `Event` (`src/common/Event.ts`): `on()` hands back its own
 * disposer, and a listener that throws is reported, never rethrown into the emitter (a
 * breaker changing state, a timer, a request).
 */

/**
 * Every event, by type. Empty here: each engine merges its own in. Applications may
 * merge theirs as well (`declare module '@aegis/core' { interface AegisEvents { … } }`).
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type -- filled by declaration merging
export interface AegisEvents {}

/** The type of an event (`'upstream.breaker'`, `'limiter.blocked'`, …). */
export type AegisEventType = keyof AegisEvents

/** One event with its type, as a union over `T`: what `onAny` listeners and the audit trail see. */
export type TypedEvent<T extends AegisEventType = AegisEventType> = {
  [K in T]: { readonly type: K } & AegisEvents[K]
}[T]

/** Stops a listener. Idempotent. */
export type Unsubscribe = () => void

/**
 * The bus. `emit` is synchronous and never throws; `has(type)` lets an emitter on a
 * hot path skip building an event nobody listens to.
 *
 * @example
 * const off = bus.on('upstream.breaker', (e) => console.log(e.route, e.state))
 * off()
 */
export interface EventBus {
  on<K extends AegisEventType>(type: K, listener: (event: AegisEvents[K]) => void): Unsubscribe
  /** Every event, with its type. */
  onAny(listener: (event: TypedEvent) => void): Unsubscribe
  emit<K extends AegisEventType>(type: K, event: AegisEvents[K]): void
  /** Whether anything listens to `type` (or to every event). */
  has(type: AegisEventType): boolean
}

type AnyListener = (event: never) => void

/**
 * Create a bus. `onListenerError` hears what a listener threw (with the event's
 * type); it must not throw itself.
 *
 * @example
 * const bus = createEventBus((err, type) => logger.error({ err, type }, 'event listener failed'))
 */
export function createEventBus(onListenerError: (err: unknown, type: string) => void): EventBus {
  // Arrays replaced on change (copy-on-write): an emit in progress keeps the list it started with.
  const byType = new Map<string, readonly AnyListener[]>()
  let any: readonly ((event: TypedEvent) => void)[] = []
  const remove = <L>(list: readonly L[], listener: L): readonly L[] => {
    const i = list.indexOf(listener)
    return i < 0 ? list : [...list.slice(0, i), ...list.slice(i + 1)]
  }
  return {
    on(type, listener) {
      byType.set(type, [...(byType.get(type) ?? []), listener])
      let done = false
      return () => {
        if (done) return
        done = true
        const left = remove(byType.get(type) ?? [], listener)
        if (left.length === 0) byType.delete(type)
        else byType.set(type, left)
      }
    },
    onAny(listener) {
      any = [...any, listener]
      let done = false
      return () => {
        if (done) return
        done = true
        any = remove(any, listener)
      }
    },
    emit(type, event) {
      const listeners = byType.get(type)
      if (listeners !== undefined)
        for (const listener of listeners) {
          try {
            ;(listener as (e: typeof event) => void)(event)
          } catch (err) {
            onListenerError(err, type)
          }
        }
      if (any.length === 0) return
      const typed = { type, ...(event as object) } as TypedEvent
      for (const listener of any) {
        try {
          listener(typed)
        } catch (err) {
          onListenerError(err, type)
        }
      }
    },
    has: (type) => any.length > 0 || byType.has(type),
  }
}
