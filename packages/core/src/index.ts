/**
 * @aegis/core — the engines and the request pipeline behind the Express,
 * Fastify and Koa adapters.
 */
export { createAegis } from './pipeline/aegis.js'
export { requestStateOf } from './pipeline/state.js'
export type {
  Aegis,
  AdapterHooks,
  Dispatched,
  Forwarder,
  ReloadOptions,
  ReloadResult,
  ValidateResult,
} from './pipeline/api.js'
export {
  watchConfig,
  configDiff,
  configHash,
  type ConfigWatcher,
  type WatchConfigOptions,
  type PatchOperation,
  type ReloadSource,
} from './reload/index.js'
export type {
  Admission,
  BodyTap,
  Endpoint,
  Engine,
  Observation,
  UpstreamFailure,
  UpstreamHooks,
  UpstreamResponse,
  Verdict,
} from './kernel/engine.js'
export type { AegisEvents, AegisEventType, EventBus, TypedEvent, Unsubscribe } from './kernel/events.js'
export type {
  AegisRequestState,
  ClientIdentity,
  HeaderList,
  Rejection,
  RouteOf,
  ValidatedInput,
} from './kernel/types.js'
export { problem, ERRORS_DOC, IETF_PROBLEM, PROBLEM_CONTENT_TYPE } from './kernel/problem.js'
export type { ProblemInit } from './kernel/problem.js'
export {
  AegisError,
  AegisArgumentError,
  AegisConfigError,
  ErrorCodes,
  WarningCodes,
} from './kernel/errors.js'
export type { ErrorCode, WarningCode, ConfigIssue } from './kernel/errors.js'
export { parseOptions, optionsSchema } from './options/index.js'
export type { AegisOptions, AegisConfig, Logger, SkipFunction, RejectHook } from './options/index.js'
export {
  loadConfigFile,
  loadConfigFileSync,
  parseConfigText,
  formatConfigIssue,
  MAX_CONFIG_BYTES,
} from './config-file/index.js'
export type { ConfigEnv, ConfigFormat, LoadedConfig, ParseConfigOptions } from './config-file/index.js'
export { createClientResolver } from './client/index.js'
export type { ClientResolver, TrustProxyOption } from './client/index.js'
export { authorityPort, inspectPath, normalizeHost } from './validator/index.js'
export type { ValidatorOptions, RouteSchemas, RouteInput, RouteValidator } from './validator/index.js'
export type { HeadersOptions } from './headers/index.js'
export type { CorsOptions, OriginFunction } from './cors/index.js'
export { templatize } from './metrics/index.js'
export type { Metrics, MetricsOptions } from './metrics/index.js'
export type { HttpServer } from './http-server/index.js'
export { shapeRequests, REPROTOTYPING_IS_UNCACHED } from './node/shape.js'
export type { ShapedRequests, ShapeOptions } from './node/shape.js'
export type {
  Limiter,
  LimiterOptions,
  LimitResult,
  LimitStatus,
  LimiterTop,
  TopKey,
  TopOptions,
  TopBy,
  PolicyOptions,
  KeyFunction,
  CostFunction,
} from './limiter/index.js'
export type {
  AuditLog,
  AuditTrail,
  AuditEntry,
  AuditEvent,
  AuditType,
  AuditQuery,
  AuditOptions,
  AuditSink,
  AuditSearch,
  AuditPage,
  AuditStats,
  AuditRecord,
  AuditCheckpoint,
  AuditVerification,
  AuditFault,
  AdminAction,
  JsonPatchOperation,
  SecurityCount,
} from './audit/index.js'
export { AUDIT_VERSION, AUDITED_EVENTS, SECURITY_EVENTS } from './audit/index.js'
export type { RedisConnection, StoreOptions, RedisClient } from './store/index.js'
export type { Gateway, ProxyRoute, ProxyRouteOptions, ProxyRouteConfig, ParsedBody } from './gateway/index.js'
export type { GatewayAdmin } from './gateway/engine.js'
export type {
  RouteStatus,
  UpstreamStatus,
  BreakerStatus,
  UpstreamChange,
  ForcedBreaker,
} from './gateway/status.js'
export type { UpstreamAdminState } from './gateway/events.js'
export type {
  GhostApi,
  GhostPurge,
  GhostEntriesOptions,
  GhostEntriesPage,
  GhostEntryView,
} from './ghost/engine.js'
export { historySchema, HISTORY_VERSION, RANGES as HISTORY_RANGES } from './history/index.js'
export type {
  HistoryApi,
  HistoryInstance,
  HistoryOptions,
  HistoryConfig,
  HistoryQuery,
  HistoryRange,
  HistoryResult,
  HistorySecond,
  SeriesPoints,
  HistogramPoints,
  RuntimeStats,
  RedisStats,
  RedisNodeStats,
} from './history/index.js'
export type { AnomalyApi, AnomalyClient, AnomalyStats } from './anomaly/engine.js'
export type { AnomalyOptions, AnomalyConfig, ChallengeHook, CampaignInfo } from './anomaly/options.js'
export type { AdminApi } from './admin/engine.js'
export type { AdminOptions, AdminConfig, AdminRole } from './admin/options.js'
export type { FeedBatch } from './admin/feed.js'
export { AEGIS_VERSION } from './version.js'
export type { GhostOptions, GhostConfig, GhostSettings } from './ghost/options.js'
export type { GhostStore, GhostEntry, GhostEntryInfo } from './ghost/store.js'

// The engines' own factories (createLimiter, createGateway, createCors, …) are not exported:
// an engine is built by createAegis from the options, and composed through pipeline/engines.ts.
