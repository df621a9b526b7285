/**
 * The demo's session store, chosen by the SESSION_STORE environment variable. Each store
 * module is imported only when chosen, so an unused driver is never loaded.
 */
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import type { AnyStore } from "sessionkit";

type Env = Record<string, string | undefined>;

/** A configuration mistake in the environment: the server prints its message alone. */
export class DemoConfigError extends Error {
	override name = "DemoConfigError";
}

const openers = {
	async sqlite(env: Env) {
		const path = resolve(env.SESSION_SQLITE_PATH || "data/sessions.db");
		mkdirSync(dirname(path), { recursive: true });
		const { sqliteStore } = await import("sessionkit/stores/sqlite");
		return sqliteStore({ path });
	},
	// No store at all: createSessions then uses its memory store, and refuses it in production.
	async memory() {
		return undefined;
	},
	async file(env: Env) {
		const { fileStore } = await import("sessionkit/stores/file");
		return fileStore({ dir: resolve(env.SESSION_FILE_DIR || "data/sessions") });
	},
	async postgres(env: Env) {
		const { postgresStore } = await import("sessionkit/stores/postgres");
		return postgresStore({ url: env.POSTGRES_URL || "postgres://postgres@127.0.0.1:5432/test" });
	},
	async mysql(env: Env) {
		const { mysqlStore } = await import("sessionkit/stores/mysql");
		return mysqlStore({ url: env.MYSQL_URL || "mysql://root@127.0.0.1:3306/test" });
	},
	async redis(env: Env) {
		const { redisStore } = await import("sessionkit/stores/redis");
		return redisStore({ url: env.REDIS_URL || "redis://127.0.0.1:6379" });
	},
	async memcached(env: Env) {
		const { memcachedStore } = await import("sessionkit/stores/memcached");
		return memcachedStore({ servers: env.MEMCACHED_SERVERS || "127.0.0.1:11211" });
	},
	async mongodb(env: Env) {
		const url = env.MONGODB_URL;
		if (!url) throw new DemoConfigError("SESSION_STORE=mongodb needs MONGODB_URL, e.g. mongodb://127.0.0.1:27017/test");
		const { mongodbStore } = await import("sessionkit/stores/mongodb");
		return mongodbStore({ url });
	},
	async cookie(env: Env) {
		const secret = env.SESSION_SECRET;
		if (!secret || secret.length < 32) {
			throw new DemoConfigError(
				`SESSION_STORE=cookie needs SESSION_SECRET, at least 32 random characters (${secret ? `got ${secret.length}` : "it is not set"}). Generate one with: openssl rand -base64 32`,
			);
		}
		const { cookieStore } = await import("sessionkit/stores/cookie");
		return cookieStore({ secrets: secret });
	},
} satisfies Record<string, (env: Env) => Promise<AnyStore | undefined>>;

/** The names SESSION_STORE accepts; the first is the default. */
export type StoreName = keyof typeof openers;
export const STORE_NAMES = Object.keys(openers) as StoreName[];

/** The chosen store; `store` is `undefined` for memory (see above). */
export interface DemoStore {
	name: StoreName;
	store: AnyStore | undefined;
}

function isStoreName(name: string): name is StoreName {
	return Object.hasOwn(openers, name);
}

/**
 * Opens the store SESSION_STORE names (default `sqlite`, in data/sessions.db under the
 * working directory, or SESSION_SQLITE_PATH). Throws `DemoConfigError` for an unknown name or
 * a missing setting.
 */
export async function openStore(env: Env = process.env): Promise<DemoStore> {
	const name = (env.SESSION_STORE || "sqlite").trim().toLowerCase();
	if (!isStoreName(name)) {
		throw new DemoConfigError(`SESSION_STORE=${JSON.stringify(env.SESSION_STORE)} is not a store. Valid: ${STORE_NAMES.join(", ")}.`);
	}
	return { name, store: await openers[name](env) };
}
