/**
 * Diagnostics for a security team: what happened to a session and why. Events never carry a
 * raw token; `id` is the public session id (the store key).
 */
export type SessionEvent =
	| { type: "cookie-rejected"; reason: "malformed" | "oversized" | "duplicated" | "unsealable" }
	| { type: "session-unknown"; id: string }
	| { type: "session-expired"; id: string | null; reason: "idle" | "absolute" }
	| { type: "session-created"; id: string | null }
	| { type: "session-renewed"; id: string | null; previousId: string | null }
	| { type: "session-destroyed"; id: string | null }
	| { type: "session-lost"; id: string; reason: "destroyed-concurrently" }
	| { type: "store-error"; store: string; operation: string; error: unknown };

/** Why `onDestroy` callbacks ran. */
export type DestroyReason = "destroyed" | "expired" | "by-id" | "by-subject";

/** What `onDestroy` callbacks receive. */
export interface DestroyedSession {
	id: string;
	subject: string | null;
	reason: DestroyReason;
}
