export { createSessions, SESSION_RESPONSE_HEADERS } from "./core/manager.js";
export { Session } from "./core/session.js";
export { defaultCodec } from "./core/codec.js";
export {
	SessionError,
	SessionConfigError,
	SessionStoreError,
	SessionTooLargeError,
	SessionCodecError,
	SessionNotLoadedError,
	SessionUsageError,
} from "./core/errors.js";
export { applyChanges, isSealedCookieStore } from "./core/store.js";
export { generateToken, hashToken, isWellFormedToken, isWellFormedKey } from "./core/token.js";

export type { SessionManager, CommitResult, SessionInfo } from "./core/manager.js";
export type { SessionOptions, CookieOptions, ResolvedOptions } from "./core/options.js";
export type { NumericKeys, FlashOptions } from "./core/session.js";
export type { Codec } from "./core/codec.js";
export type { SessionErrorCode } from "./core/errors.js";
export type { SessionEvent, DestroyedSession, DestroyReason } from "./core/events.js";
export type {
	SessionStore,
	AsyncSessionStore,
	SyncSessionStore,
	SealedCookieStore,
	AnyStore,
	StoredRecord,
	RecordChanges,
	SubjectSession,
} from "./core/store.js";
export type { Awaitable } from "./core/steps.js";

/**
 * Augment this interface to type `req.session` in every adapter:
 *
 * @example
 * declare module "sessionkit" {
 *   interface SessionData { userId: number; cart: string[] }
 * }
 */
// biome-ignore lint: an empty interface is the augmentation point.
export interface SessionData {}

/** The data shape adapters use: `SessionData` once augmented, otherwise any string-keyed record. */
export type AppSessionData = keyof SessionData extends never ? Record<string, unknown> : SessionData;
