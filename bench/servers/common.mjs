// Shared by every benchmark server: configuration from the environment, the typical login
// session, bench-only counting wrappers around stores, the store factories, and the stdin/stdout
// line through which the driver reads the counters.
//
// Servers are plain .mjs on purpose: the peers augment `req.session` with types that clash
// with sessionkit's in one TypeScript program, and sessionkit is imported from the compiled
// dist (SESSIONKIT_DIST), as users run it.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

export const env = {
	store: process.env.BENCH_STORE ?? "memory",
	dist: process.env.SESSIONKIT_DIST ?? "",
	redisUrl: process.env.BENCH_REDIS_URL ?? "redis://127.0.0.1:6379",
	postgresUrl: process.env.BENCH_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/sessionkit_bench",
	sqlitePath: process.env.BENCH_SQLITE_PATH ?? "",
};

export const SECRET = "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz";
export const SECRET_ITEMS = [SECRET];

/** A typical login session: a user id, a few fields and one flash message. */
export const LOGIN = {
	userId: 4242,
	name: "Ada Lovelace",
	email: "ada@example.com",
	roles: ["admin", "editor"],
	locale: "en-GB",
	csrf: "Zq3x9Vb2LkP0sT8wYc1NfR5hJd7Gm4Ua",
};
export const FLASH = { notice: "Welcome back, Ada!" };

/** Counters read by the driver ("stats" on stdin, see `ready`). */
export const stats = {
	/** Requests the HTTP server received (counted on its "request" event). */
	requests: 0,
	calls: Object.create(null),
	writes: 0,
	queries: 0,
	queryWrites: 0,
	/** Bytes of the first record a store was given (the login session): key + value as the store keeps it. */
	firstSet: null,
};

const WRITE_METHODS = new Set(["set", "replace", "merge", "touch", "delete", "destroy", "seal"]);

function count(method) {
	stats.calls[method] = (stats.calls[method] ?? 0) + 1;
	if (WRITE_METHODS.has(method)) stats.writes++;
}

export function noteFirstSet(key, value) {
	if (stats.firstSet !== null) return;
	const text = typeof value === "string" ? value : JSON.stringify(value);
	stats.firstSet = { keyBytes: Buffer.byteLength(String(key)), valueBytes: Buffer.byteLength(text) };
}

/** Wraps a sessionkit store so every call is counted; optional methods stay optional. */
export function countSessionkitStore(store) {
	const wrapped = {};
	const seen = new Set();
	for (let object = store; object && object !== Object.prototype; object = Object.getPrototypeOf(object)) {
		for (const name of Object.getOwnPropertyNames(object)) {
			if (name === "constructor" || seen.has(name)) continue;
			seen.add(name);
			const descriptor = Object.getOwnPropertyDescriptor(object, name);
			if (typeof descriptor.value !== "function") {
				// Data and getters (name, kind, size...) read through to the store.
				Object.defineProperty(wrapped, name, { enumerable: true, get: () => store[name] });
				continue;
			}
			const method = descriptor.value;
			wrapped[name] = (...args) => {
				count(name);
				if ((name === "set" || name === "replace") && stats.firstSet === null) noteFirstSet(args[0], args[1]);
				return method.apply(store, args);
			};
		}
	}
	return wrapped;
}

/** Wraps the methods of a peer's store instance in place (express-session style or koa style). */
export function countPeerStore(store, methods) {
	for (const name of methods) {
		const original = store[name];
		if (typeof original !== "function") continue;
		store[name] = function (...args) {
			count(name === "destroy" ? "delete" : name);
			if (name === "set" && stats.firstSet === null) noteFirstSet(args[0], args[1]);
			return original.apply(this, args);
		};
	}
	return store;
}

/** Counts every query (one round trip each) of every pg client in this process. */
export async function countPgQueries() {
	const pg = (await import("pg")).default;
	const original = pg.Client.prototype.query;
	pg.Client.prototype.query = function (config, ...rest) {
		stats.queries++;
		const text = typeof config === "string" ? config : config?.text ?? "";
		if (/^\s*(insert|update|delete|with|merge)\b/i.test(text)) stats.queryWrites++;
		return original.call(this, config, ...rest);
	};
	return pg;
}

/** Imports a compiled sessionkit module, or exits with a SKIP line when it is not there. */
export async function sessionkit(subpath) {
	const file = join(env.dist, `${subpath}.js`);
	if (!env.dist || !existsSync(file)) skip(`sessionkit module ${subpath} is not built (src/${subpath}.ts missing or did not compile)`);
	return import(pathToFileURL(file).href);
}

export function skip(reason) {
	process.stdout.write(`SKIP ${reason}\n`);
	process.exit(3);
}

/** The sessionkit store for BENCH_STORE, wrapped for counting. `close` releases what it opened. */
export async function sessionkitStore() {
	switch (env.store) {
		case "memory": {
			const { memoryStore } = await sessionkit("stores/memory");
			return { store: countSessionkitStore(memoryStore({ maxSessions: 200_000 })), close: async () => {} };
		}
		case "cookie": {
			const { cookieStore } = await sessionkit("stores/cookie");
			return { store: countSessionkitStore(cookieStore({ secrets: SECRET_ITEMS })), close: async () => {} };
		}
		case "redis": {
			const { redisStore } = await sessionkit("stores/redis");
			const { Redis } = await import("ioredis");
			const client = new Redis(env.redisUrl, { lazyConnect: false, enableAutoPipelining: false });
			await client.ping();
			return { store: countSessionkitStore(redisStore({ client })), close: async () => client.quit() };
		}
		case "postgres": {
			const { postgresStore } = await sessionkit("stores/postgres");
			const pg = await countPgQueries();
			const pool = new pg.Pool({ connectionString: env.postgresUrl, max: 10 });
			return { store: countSessionkitStore(postgresStore({ pool })), close: async () => pool.end() };
		}
		case "sqlite": {
			const { sqliteStore } = await sessionkit("stores/sqlite");
			return { store: countSessionkitStore(sqliteStore({ path: env.sqlitePath, gcInterval: 0 })), close: async () => {} };
		}
		default:
			skip(`sessionkit has no "${env.store}" store in this bench`);
	}
}

/** The sessionkit manager the servers use: the library's defaults, only the store chosen. */
export async function sessionkitManager() {
	const { createSessions } = await sessionkit("index");
	const { store, close } = await sessionkitStore();
	const sessions = createSessions({ store });
	return { sessions, close: async () => { await sessions.close(); await close(); } };
}

/** The login handler body for sessionkit sessions. */
export function sessionkitLogin(session) {
	for (const [key, value] of Object.entries(LOGIN)) session.set(key, value);
	session.flash("notice", FLASH.notice);
	session.subject = String(LOGIN.userId);
}

/** The login handler body for the peers' plain-object sessions (flash kept the way connect-flash does). */
export function objectLogin(session) {
	Object.assign(session, LOGIN);
	session.flash = { ...FLASH };
}

/**
 * Prints the READY line once the app listens on 127.0.0.1 (ephemeral port), then answers the
 * driver's "stats" lines on stdin with a "STATS {json}" line. Not over HTTP: requests to a
 * second server in this process would make V8 throw away the app's optimized HTTP code, and
 * slow the next second of the measurement. SIGTERM closes everything and exits 0 (so
 * `--cpu-prof` can write).
 */
export async function ready(listen, close = async () => {}) {
	const port = await listen();
	let pending = "";
	process.stdin.setEncoding("utf8");
	process.stdin.on("data", (chunk) => {
		pending += chunk;
		let newline;
		while ((newline = pending.indexOf("\n")) >= 0) {
			const line = pending.slice(0, newline);
			pending = pending.slice(newline + 1);
			if (line === "stats") process.stdout.write(`STATS ${JSON.stringify({ ...stats, memory: process.memoryUsage().rss })}\n`);
		}
	});
	const shutdown = async () => {
		const timer = setTimeout(() => process.exit(0), 2000);
		timer.unref();
		try {
			await close();
		} catch {}
		process.exit(0);
	};
	process.once("SIGTERM", shutdown);
	process.once("SIGINT", shutdown);
	process.stdout.write(`READY ${JSON.stringify({ port, pid: process.pid })}\n`);
}

/** Listens a node:http server on 127.0.0.1 and resolves to its port. */
export function listenNode(server) {
	return () => new Promise((resolve, reject) => {
		server.once("error", reject);
		server.listen(0, "127.0.0.1", () => resolve(server.address().port));
	});
}

/**
 * Counts the requests the server receives, and keeps idle connections open between phases
 * (Node's default keep-alive timeout is 5 s).
 */
export function tuneServer(server) {
	server.keepAliveTimeout = 65_000;
	server.prependListener("request", () => {
		stats.requests++;
	});
	return server;
}
