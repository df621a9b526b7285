/** What the server SQL stores (postgres, mysql) share: option checks and the per-call deadline. */
import { SessionConfigError, SessionError, SessionStoreError } from "../../core/errors.js";
import { describe } from "./describe.js";

/** A checked table name: an optional schema (database, in MySQL) and the table itself. */
export interface TableName {
	schema: string | null;
	name: string;
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;
// Index names are `<name>_expires_at_idx`: 48 + 15 characters stay within PostgreSQL's 63.
const MAX_NAME = 48;
const MAX_SCHEMA = 63;

/**
 * Splits and checks `table` (`"sessions"` or `"schema.sessions"`). Each part is a plain SQL
 * identifier: a letter or `_`, then letters, digits or `_`; at most 48 characters for the table
 * and 63 for the schema. Throws `SessionConfigError` naming `table` otherwise.
 */
export function parseTable(table: unknown): TableName {
	const parts = typeof table === "string" ? table.split(".") : [];
	const name = parts.at(-1);
	const schema = parts.length === 2 ? parts[0]! : null;
	const valid =
		(parts.length === 1 || parts.length === 2) &&
		name !== undefined &&
		IDENTIFIER.test(name) &&
		name.length <= MAX_NAME &&
		(schema === null || (IDENTIFIER.test(schema) && schema.length <= MAX_SCHEMA));
	if (!valid) {
		throw new SessionConfigError(
			"table",
			`must be a plain SQL identifier, optionally schema-qualified ("sessions" or "app.sessions"; a letter or _, then letters, digits or _, at most ${MAX_NAME} characters), got ${describe(table)}.`,
		);
	}
	return { schema, name };
}

/** `createTable ?? true`, checked. Throws `SessionConfigError` for anything but a boolean. */
export function checkCreateTable(createTable: unknown): boolean {
	const value = createTable ?? true;
	if (typeof value !== "boolean") throw new SessionConfigError("createTable", `must be true or false, got ${describe(value)}.`);
	return value;
}

/**
 * Checks that exactly one of `pool` and `url` is given: a pool with a `query` method, or a
 * non-empty URL string. `driver` names the expected pool in the message. Throws `SessionConfigError`.
 */
export function checkConnection(connection: unknown, driver: string): "pool" | "url" {
	const { pool, url } = (typeof connection === "object" && connection !== null ? connection : {}) as { pool?: unknown; url?: unknown };
	if ((pool === undefined) === (url === undefined)) {
		throw new SessionConfigError("pool", `or url: give exactly one, the app's ${driver} pool or a connection URL for the store to open.`);
	}
	if (pool !== undefined) {
		if (typeof pool !== "object" || pool === null || typeof (pool as { query?: unknown }).query !== "function") {
			throw new SessionConfigError("pool", `must be a ${driver} pool.`);
		}
		return "pool";
	}
	if (typeof url !== "string" || url === "") throw new SessionConfigError("url", "must be a non-empty connection URL.");
	return "url";
}

/** The driver error's own words: Node's AggregateError (every address refused) has an empty message. */
export function messageOf(error: unknown): string {
	if (error instanceof Error) return error.message || (error as { code?: string }).code || error.name;
	return String(error);
}

/**
 * Runs `work` under a deadline of `seconds`. Resolves with its result; rejects with a
 * `SessionStoreError` naming `store` when the deadline passes first, or when `work` rejects
 * with anything but a `SessionError` (which passes through). `explain` words the driver's error.
 *
 * The deadline cannot recall what the driver already sent: `signal` aborts when it passes, so
 * work of several steps can stop before it commits.
 */
export async function withDeadline<T>(
	store: string,
	operation: string,
	seconds: number,
	work: (signal: AbortSignal) => Promise<T>,
	explain: (error: unknown) => string = messageOf,
): Promise<T> {
	const controller = new AbortController();
	let timer: ReturnType<typeof setTimeout> | undefined;
	const deadline = new Promise<never>((_, reject) => {
		timer = setTimeout(() => {
			controller.abort();
			reject(new SessionStoreError(store, `${operation} timed out after ${seconds} s. Is the database reachable, and is the row not locked by a long transaction?`));
		}, seconds * 1000);
	});
	const running = work(controller.signal);
	// After the deadline the caller has its answer; a late failure has no one left to tell.
	running.catch(() => undefined);
	try {
		return await Promise.race([running, deadline]);
	} catch (error) {
		if (error instanceof SessionError) throw error;
		throw new SessionStoreError(store, `${operation} failed: ${explain(error)}`, { cause: error });
	} finally {
		clearTimeout(timer);
	}
}

/**
 * Wraps `init` so it runs once: every caller shares the first run's promise. A failed run is
 * forgotten, so the next call tries again (the cause may pass: a restarting server, a missing grant).
 */
export function onceUntilSuccess<T>(init: () => Promise<T>): () => Promise<T> {
	let running: Promise<T> | undefined;
	return () =>
		(running ??= init().catch((error: unknown) => {
			running = undefined;
			throw error;
		}));
}

/**
 * A SQL store's `close()`: stops the gc timer, marks the store closed (so a gc run in progress
 * sends no further batch: "called after close()"), waits for that run's statement in flight,
 * then ends the pool the store made. Every call shares the first one's work, so a second
 * `close()` also resolves only once all of it is done.
 */
export function closeOnce(stopGC: () => Promise<void>, markClosed: () => void, endPool: () => Promise<void>): () => Promise<void> {
	let closing: Promise<void> | undefined;
	return () =>
		(closing ??= (async () => {
			const stopped = stopGC();
			markClosed();
			await stopped;
			await endPool();
		})());
}

/** Reads a JSON column the driver may hand over parsed (pg jsonb, MySQL 8 JSON) or as text (MariaDB). */
export function jsonColumn(value: unknown): Record<string, string> {
	if (typeof value === "string") return JSON.parse(value) as Record<string, string>;
	if (value instanceof Uint8Array) return JSON.parse(Buffer.from(value).toString("utf8")) as Record<string, string>;
	return value as Record<string, string>;
}
