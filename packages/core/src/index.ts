/**
 * @aegis/core — the engines and the request pipeline behind the Express,
 * Fastify and Koa adapters.
 */
export { createAegis } from './pipeline/aegis.js'
export { requestStateOf } from './pipeline/state.js'
export type { Aegis, AdapterHooks } from './pipeline/aegis.js'
export type {
  AegisRequestState,
  ClientIdentity,
  HeaderList,
  Rejection,
  RouteOf,
  ValidatedInput,
} from './kernel/types.js'
export { createEventBus } from './kernel/events.js'
export type { AegisEvents, AegisEventType, EventBus, TypedEvent, Unsubscribe } from './kernel/events.js'
export type { UpstreamHooks, UpstreamFailure, UpstreamResponse, BodyTap } from './kernel/engine.js'
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
export { createClientResolver, maskAddress, parseAddress } from './client/index.js'
export type { ClientResolver, TrustProxyOption } from './client/index.js'
export {
  createValidator,
  normalizeHost,
  authorityPort,
  inspectPath,
  percentDecode,
  DEFAULT_METHODS,
} from './validator/index.js'
export type {
  Validator,
  ValidatorOptions,
  RouteSchemas,
  RouteInput,
  RouteValidator,
} from './validator/index.js'
export { securityHeaders } from './headers/index.js'
export type { HeadersOptions } from './headers/index.js'
export { createCors } from './cors/index.js'
export type { CorsOptions, OriginFunction } from './cors/index.js'
export { createMetrics, createRouteLearner, templatize } from './metrics/index.js'
export { normalizeTarget, pathOf } from './kernel/url.js'
export type { Metrics, MetricsOptions } from './metrics/index.js'
export type { HttpServer } from './server/index.js'
export { shapeRequests, REPROTOTYPING_IS_UNCACHED } from './node/shape.js'
export type { ShapedRequests, ShapeOptions } from './node/shape.js'
export { createLimiter } from './limiter/index.js'
export type {
  Limiter,
  LimiterOptions,
  LimitResult,
  LimitStatus,
  PolicyOptions,
  KeyFunction,
  CostFunction,
} from './limiter/index.js'
export { createAuditLog, auditSchema } from './audit/index.js'
export type {
  AuditLog,
  AuditTrail,
  AuditEntry,
  AuditEvent,
  AuditType,
  AuditQuery,
  AuditOptions,
  AuditSink,
} from './audit/index.js'
export { connectStore } from './store/index.js'
export type { RedisConnection, StoreOptions, RedisClient } from './store/index.js'
export {
  createGateway,
  createProxyRoute,
  proxyRouteSchema,
  parseUpstreamUrl,
  underPrefix,
} from './gateway/index.js'
export type {
  Gateway,
  GatewayDeps,
  ProxyRoute,
  ProxyRouteOptions,
  ProxyRouteConfig,
  ParsedBody,
} from './gateway/index.js'
