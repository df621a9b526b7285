/**
 * The networked stores' servers, and the counters the bench reads from them.
 *
 * Redis: a private `redis-server` on a free 127.0.0.1 port (no persistence), so that INFO
 * commandstats and total_reads_processed count only the bench's own server, and FLUSHALL
 * between variants touches nobody else's data. Without the binary, the shared REDIS_URL is
 * used (database 15), and the counts may include other clients.
 *
 * PostgreSQL: a database of its own, `sessionkit_bench`, on the shared server (POSTGRES_URL);
 * its tables are dropped between variants. Round trips are counted in the server process
 * (every pg query is one round trip), since pg_stat_statements is not loaded on the project's
 * machines and pg_stat_database flushes only every few seconds.
 */
import { existsSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { Redis } from "ioredis";
import pg from "pg";
import { commandExists, startProcess, type Started } from "./proc.js";

export function freePort(): Promise<number> {
	return new Promise((resolve, reject) => {
		const server = net.createServer();
		server.once("error", reject);
		server.listen(0, "127.0.0.1", () => {
			const port = (server.address() as net.AddressInfo).port;
			server.close(() => resolve(port));
		});
	});
}

function reachable(host: string, port: number): Promise<boolean> {
	return new Promise((resolve) => {
		const socket = net.connect({ host, port });
		const done = (ok: boolean) => {
			socket.destroy();
			resolve(ok);
		};
		socket.setTimeout(1000, () => done(false));
		socket.once("connect", () => done(true));
		socket.once("error", () => done(false));
	});
}

// ---------------------------------------------------------------------------------- Redis

export interface RedisService {
	url: string;
	/** "private redis-server 7.x on :port" or "shared REDIS_URL db 15". */
	description: string;
	private: boolean;
	client: Redis;
	reset(): Promise<void>;
	/** Commands executed by name (INFO commandstats) and sockets reads processed (INFO stats). */
	snapshot(): Promise<RedisSnapshot>;
	/** The bytes the session record takes: each key with its value size. */
	keys(): Promise<Array<{ key: string; type: string; bytes: number }>>;
	stop(): Promise<void>;
}

export interface RedisSnapshot {
	commands: Record<string, number>;
	reads: number;
}

/** Commands that change data (EVAL/EVALSHA and FCALL are counted as writes: they may). */
const REDIS_NOT_DATA = new Set(["info", "ping", "client", "hello", "select", "command", "config", "script", "auth", "quit", "flushall", "flushdb", "scan", "type", "dbsize", "multi", "exec", "discard", "watch", "unwatch", "memory", "debug", "object", "keys"]);
const REDIS_READS = new Set(["get", "mget", "hget", "hgetall", "hmget", "exists", "ttl", "pttl", "smembers", "sismember", "scard", "zrange", "zrangebyscore", "zscore", "zcard", "strlen", "hlen", "getex", "evalsha_ro", "eval_ro", "fcall_ro", "lrange"]);

export function redisCounts(before: RedisSnapshot, after: RedisSnapshot): { commands: number; writes: number; byCommand: Record<string, number> } {
	let commands = 0;
	let writes = 0;
	const byCommand: Record<string, number> = {};
	for (const [name, calls] of Object.entries(after.commands)) {
		const delta = calls - (before.commands[name] ?? 0);
		if (delta <= 0 || REDIS_NOT_DATA.has(name.split("|")[0]!)) continue;
		byCommand[name] = delta;
		commands += delta;
		if (!REDIS_READS.has(name)) writes += delta;
	}
	return { commands, writes, byCommand };
}

/**
 * A private redis-server on a free port; without the binary, the shared Redis at REDIS_URL, in
 * `sharedDatabase` (counts then include every client of that server).
 */
export async function startRedis(log: (line: string) => void, sharedDatabase: number): Promise<RedisService | null> {
	let server: Started | null = null;
	let url: string;
	let description: string;
	if (commandExists("redis-server")) {
		const port = await freePort();
		server = await startProcess("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no", "--loglevel", "notice"], {
			ready: (line) => line.includes("Ready to accept connections"),
			timeoutMs: 10_000,
		});
		url = `redis://127.0.0.1:${port}/0`;
		description = `private redis-server on 127.0.0.1:${port} (no persistence)`;
	} else {
		const shared = new URL(process.env.REDIS_URL ?? "redis://127.0.0.1:6379");
		if (!(await reachable(shared.hostname, Number(shared.port || 6379)))) {
			log(`skip redis: no redis-server binary and ${shared.host} does not answer`);
			return null;
		}
		if (shared.hostname !== "127.0.0.1" && shared.hostname !== "localhost") {
			log(`skip redis: REDIS_URL is not on 127.0.0.1`);
			return null;
		}
		shared.pathname = `/${sharedDatabase}`;
		url = shared.toString();
		description = `shared Redis at ${shared.host}, database ${sharedDatabase} (counts may include other clients)`;
	}
	const client = new Redis(url, { lazyConnect: false, maxRetriesPerRequest: 2 });
	await client.ping();
	const version = /redis_version:(\S+)/.exec(await client.info("server"))?.[1] ?? "?";
	description = description.replace("redis-server", `redis-server ${version}`).replace("shared Redis", `shared Redis ${version}`);
	const isPrivate = server !== null;
	return {
		url,
		description,
		private: isPrivate,
		client,
		async reset() {
			if (isPrivate) await client.flushall();
			else await client.flushdb();
			if (isPrivate) await client.config("RESETSTAT");
		},
		async snapshot() {
			const commands: Record<string, number> = {};
			const stats = await client.info("commandstats");
			for (const match of stats.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) commands[match[1]!] = Number(match[2]);
			const info = await client.info("stats");
			const reads = Number(/total_reads_processed:(\d+)/.exec(info)?.[1] ?? Number.NaN);
			return { commands, reads };
		},
		async keys() {
			const out: Array<{ key: string; type: string; bytes: number }> = [];
			let cursor = "0";
			do {
				const [next, batch] = await client.scan(cursor, "COUNT", "1000");
				cursor = next;
				for (const key of batch) {
					const type = await client.type(key);
					let bytes = 0;
					if (type === "string") bytes = await client.strlen(key);
					else if (type === "hash") {
						const fields = await client.hgetall(key);
						for (const [field, value] of Object.entries(fields)) bytes += Buffer.byteLength(field) + Buffer.byteLength(value);
					} else if (type === "set") {
						for (const member of await client.smembers(key)) bytes += Buffer.byteLength(member);
					} else if (type === "zset") {
						for (const member of await client.zrange(key, "0", "-1")) bytes += Buffer.byteLength(member) + 8;
					} else if (type === "list") {
						for (const item of await client.lrange(key, "0", "-1")) bytes += Buffer.byteLength(item);
					}
					out.push({ key, type, bytes: bytes + Buffer.byteLength(key) });
				}
			} while (cursor !== "0");
			return out;
		},
		async stop() {
			client.disconnect();
			await server?.stop();
		},
	};
}

// ------------------------------------------------------------------------------- Postgres

export interface PostgresService {
	url: string;
	description: string;
	reset(): Promise<void>;
	/** Every row of every table of the bench database, with its size (sum of column values as text). */
	rows(): Promise<Array<{ table: string; bytes: number }>>;
	stop(): Promise<void>;
}

const BENCH_DATABASE = "sessionkit_bench";

export async function startPostgres(log: (line: string) => void): Promise<PostgresService | null> {
	const admin = new URL(process.env.POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test");
	if (admin.hostname !== "127.0.0.1" && admin.hostname !== "localhost") {
		log("skip postgres: POSTGRES_URL is not on 127.0.0.1");
		return null;
	}
	if (!(await reachable(admin.hostname, Number(admin.port || 5432)))) {
		log(`skip postgres: ${admin.host} does not answer`);
		return null;
	}
	const adminClient = new pg.Client({ connectionString: admin.toString() });
	let version = "?";
	try {
		await adminClient.connect();
		version = String((await adminClient.query("show server_version")).rows[0]?.server_version ?? "?");
		const exists = await adminClient.query("select 1 from pg_database where datname = $1", [BENCH_DATABASE]);
		if (exists.rowCount === 0) await adminClient.query(`create database ${BENCH_DATABASE}`);
	} catch (error) {
		log(`skip postgres: ${(error as Error).message}`);
		return null;
	} finally {
		await adminClient.end().catch(() => {});
	}
	const url = new URL(admin.toString());
	url.pathname = `/${BENCH_DATABASE}`;
	const pool = new pg.Pool({ connectionString: url.toString(), max: 2 });
	const tables = async (): Promise<string[]> =>
		(await pool.query<{ tablename: string }>("select tablename from pg_tables where schemaname = 'public'")).rows.map((r) => r.tablename);
	return {
		url: url.toString(),
		description: `PostgreSQL ${version} at ${admin.host}, database ${BENCH_DATABASE}`,
		async reset() {
			for (const table of await tables()) await pool.query(`drop table if exists "${table.replaceAll('"', '""')}" cascade`);
		},
		async rows() {
			const out: Array<{ table: string; bytes: number }> = [];
			for (const table of await tables()) {
				const result = await pool.query(`select * from "${table.replaceAll('"', '""')}"`);
				for (const row of result.rows as Array<Record<string, unknown>>) out.push({ table, bytes: rowBytes(row) });
			}
			return out;
		},
		async stop() {
			await pool.end();
		},
	};
}

function rowBytes(row: Record<string, unknown>): number {
	let bytes = 0;
	for (const value of Object.values(row)) {
		if (value === null || value === undefined) continue;
		if (Buffer.isBuffer(value)) bytes += value.length;
		else if (value instanceof Date) bytes += 8;
		else if (typeof value === "object") bytes += Buffer.byteLength(JSON.stringify(value));
		else bytes += Buffer.byteLength(String(value));
	}
	return bytes;
}

// --------------------------------------------------------------------------------- SQLite

/** Rows of every table in the SQLite file, with their size (sum of column values as text/blob). */
export async function sqliteRows(path: string): Promise<Array<{ table: string; bytes: number }>> {
	if (!existsSync(path)) return [];
	const Database = (await import("better-sqlite3")).default;
	const db = new Database(path, { readonly: true, fileMustExist: true });
	try {
		const out: Array<{ table: string; bytes: number }> = [];
		const tables = db.prepare("select name from sqlite_master where type = 'table' and name not like 'sqlite_%'").all() as Array<{ name: string }>;
		for (const { name } of tables) {
			for (const row of db.prepare(`select * from "${name.replaceAll('"', '""')}"`).all() as Array<Record<string, unknown>>) out.push({ table: name, bytes: rowBytes(row) });
		}
		return out;
	} finally {
		db.close();
	}
}

export function removeSqlite(path: string): void {
	for (const suffix of ["", "-wal", "-shm", "-journal"]) rmSync(path + suffix, { force: true });
}

/** The CPU model line, for the report. */
export function cpuModel(): string {
	try {
		const info = readFileSync("/proc/cpuinfo", "utf8");
		const model = /model name\s*:\s*(.+)/.exec(info)?.[1]?.trim() ?? "unknown";
		return /^flags\s*:.*\bhypervisor\b/m.test(info) ? `${model} (virtual machine)` : model;
	} catch {
		return "unknown";
	}
}
