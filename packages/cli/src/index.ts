/**
 * @aegis/cli — the `aegis` command (`serve`, `validate`) and the functions behind it.
 */
export { main, HELP } from './main.js'
export type { CliIo } from './main.js'
export { startGateway } from './gateway.js'
export type { GatewayOptions, RunningGateway } from './gateway.js'
export { startDemoUpstream, demoCommands, DEMO_CONFIG } from './demo.js'
export type { DemoUpstream } from './demo.js'
export { createLogger } from './logger.js'
export type { LogFormat } from './logger.js'
