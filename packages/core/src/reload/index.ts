export { watchConfig, type ConfigWatcher, type WatchConfigOptions } from './watch.js'
export { configDiff, configHash, type PatchOperation } from './diff.js'
export type { ReloadSource } from './events.js'
