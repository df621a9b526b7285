/**
 * `npm run bench [-- options]`: sessionkit side by side with each framework's own session
 * library and with the framework alone (the ceiling), on the same stores, in one run.
 *
 * Each server runs in its own process (pinned to core 0), loaded from another process (wrk,
 * or autocannon when wrk is missing, pinned to core 1) on 127.0.0.1, for a fixed duration.
 * Servers are killed at the end of their variant, on failure too.
 *
 * Options:
 *   --quick               short runs, memory and cookie stores only (under 2 minutes)
 *   --frameworks=a,b      only these (node, express, fastify, koa, hono)
 *   --stores=a,b          only these (memory, cookie, redis, postgres, sqlite)
 *   --duration=N          seconds per measured run (default 4, quick 1)
 *   --connections=N       concurrent connections (default 10, as in the benchmark issue)
 *   --no-micro            skip the micro-benchmarks
 *   --let-cpus-halt       do not hold /dev/cpu_dma_latency at 0 (see lib/cpu-latency.ts)
 *   --profile             instead of the matrix: CPU-profile sessionkit's Express and node:http servers
 *                         under the counter load, write bench/results/profile.md
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { burst, closeAgent, cookieHeader, get, load, type LoadResult, tool } from "./lib/load.js";
import { hasTaskset, pinned, runToEnd, startProcess, type Started } from "./lib/proc.js";
import { evaluateTargets, markdown, svgChart, targetsText, terminalTable } from "./lib/report.js";
import { cpuModel, type PostgresService, type RedisService, type RedisSnapshot, redisCounts, removeSqlite, sqliteRows, startPostgres, startRedis } from "./lib/services.js";
import type { Entry, Framework, Kind, MicroResult, Report, ScenarioName, StoredBytes, StoreName } from "./lib/types.js";
import { FRAMEWORK_LABEL } from "./lib/types.js";
import { profile } from "./lib/profile.js";
import { holdCpuLatency } from "./lib/cpu-latency.js";
import { compileSrc } from "./lib/build.js";
import { TimeBudget } from "./lib/time-budget.js";

const BENCH = dirname(fileURLToPath(import.meta.url));
const ROOT = dirname(BENCH);
const RESULTS = join(BENCH, "results");
const TMP = join(RESULTS, "tmp");
const DIST = join(TMP, "dist");
const SQLITE_PATH = join(TMP, "bench.sqlite");
/** The peer's SQLite file: a file of its own, as each library has its own Redis server. */
const PEER_SQLITE_PATH = join(TMP, "bench-peer.sqlite");

// ------------------------------------------------------------------------------ options

const argv = process.argv.slice(2);
const flag = (name: string) => argv.includes(`--${name}`);
const option = (name: string) => argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
const list = (name: string) => option(name)?.split(",").map((s) => s.trim()).filter(Boolean);

const quick = flag("quick");
const settings = {
	/** Measured 1-s windows of each scenario; each is paired with a window of the ceiling (ABBA order). */
	duration: Number(option("duration") ?? (quick ? 1 : 2)),
	/**
	 * Warm-up before a server's first scenario: a load run of this many seconds, then the
	 * scenario's own warm-up run below. Two runs, because the end of the first load (its
	 * connections closing) runs code the requests did not, and V8 then throws away much of the
	 * optimized code (28 functions in one trace): the second before it is optimized again ran
	 * 10-20% slow. With one 3-s run, that second was the first measured window of every server.
	 */
	warmupSeconds: quick ? 0 : 2,
	/**
	 * Warm-up before every later scenario: a load run of this many seconds on its route. Each
	 * scenario runs code the ones before did not: after a 1500-request burst the first measured
	 * window of the counter and create scenarios ran 10-17% under the second (node:http, two
	 * runs); after 1 s of load the two differed by -6% to +6%, as the noise goes.
	 * Quick: the burst only, to stay under two minutes.
	 */
	warmupScenarioSeconds: quick ? 0 : 1,
	/**
	 * Requests sent (16 at a time) from the driver before every scenario that gets no warm-up
	 * load, for at most this many seconds: on a slow machine 2000 requests took up to a second
	 * each time, 42 times in a quick run.
	 */
	warmupBurst: { requests: 2000, seconds: 0.5 },
	/** A ceiling window after the variant's too (ABBA), not only before it (quick: AB). */
	pairAfter: !quick,
	/**
	 * Quick: the scenarios of each library. The peers run the counter only, the one their ×peer
	 * target is about; sessionkit leaves out new sessions, the one scenario without a target.
	 */
	quickScenarios: quick ? { peer: ["counter"], sessionkit: ["untouched", "counter", "read"] } : null,
	connections: Number(option("connections") ?? 10),
	/** Sequential requests used to count Redis round trips. */
	probeRequests: quick ? 10 : 20,
	/**
	 * The bound a run must end within (the benchmark issue's: 10 minutes, quick 2), less a
	 * margin for the projection's error. A full run without any stalled set measured again takes
	 * about 550 s here; each one measured again adds up to 9 s. The projection keeps a margin of
	 * one set.
	 */
	boundS: quick ? 114 : 590,
	/** What a run takes after its last window set: the micro-benchmarks (unless --no-micro) and the report. */
	afterSetsS: flag("no-micro") ? 2 : quick ? 6 : 12,
};
const budget = new TimeBudget(settings.boundS, settings.afterSetsS);
const cpuLatency = flag("let-cpus-halt") ? { description: "not held (--let-cpus-halt): idle cores may halt", release() {} } : holdCpuLatency();
const onlyFrameworks = list("frameworks") as Framework[] | undefined;
const onlyStores = list("stores") as StoreName[] | undefined;

function log(line: string): void {
	process.stdout.write(`${line}\n`);
}

// ------------------------------------------------------------------------------ the matrix

interface FrameworkPlan {
	framework: Framework;
	/** The peer library, its server file, and the stores it has (with the store's module). */
	peer: { library: string; server: string; stores: Partial<Record<StoreName, string>> } | null;
	sessionkitStores: StoreName[];
}

const PLAN: FrameworkPlan[] = [
	{ framework: "node", peer: { library: "iron-session", server: "node/iron-session.mjs", stores: { cookie: "iron-session" } }, sessionkitStores: ["memory", "cookie"] },
	{
		framework: "express",
		peer: { library: "express-session", server: "express/express-session.mjs", stores: { memory: "MemoryStore", redis: "connect-redis", postgres: "connect-pg-simple", sqlite: "better-express-store" } },
		sessionkitStores: ["memory", "redis", "postgres", "sqlite"],
	},
	{ framework: "fastify", peer: { library: "@fastify/session", server: "fastify/fastify-session.mjs", stores: { memory: "MemoryStore", redis: "connect-redis" } }, sessionkitStores: ["memory", "redis"] },
	{ framework: "koa", peer: { library: "koa-session", server: "koa/koa-session.mjs", stores: { memory: "Map store", redis: "ioredis store" } }, sessionkitStores: ["memory", "redis"] },
	{ framework: "hono", peer: null, sessionkitStores: ["memory"] },
];

const QUICK_STORES: StoreName[] = ["memory", "cookie"];

interface Scenario {
	name: ScenarioName;
	path: string;
	withCookie: boolean;
}

const SCENARIOS: Scenario[] = [
	{ name: "untouched", path: "/untouched", withCookie: true },
	{ name: "counter", path: "/counter", withCookie: true },
	{ name: "read", path: "/read", withCookie: true },
	{ name: "create", path: "/create", withCookie: false },
];

interface Variant {
	framework: Framework;
	library: string;
	kind: Kind;
	store: StoreName | "none";
	storeModule: string;
	server: string;
	/** Extra environment for the server process. */
	env?: Record<string, string>;
	/** Only these scenarios (a floor measures the one it is the floor of). */
	scenarios?: Array<Scenario["name"]>;
	/** Log in first and send the session's cookie, as sessionkit and the peers do. */
	login?: boolean;
}

/** Why a sessionkit variant cannot run yet (its adapter or store is not written), or null. */
function missingSource(framework: Framework, store: StoreName | "none"): string | null {
	const adapter = `src/adapters/${framework}.ts`;
	if (!existsSync(join(ROOT, adapter))) return `${adapter} does not exist yet`;
	if (store !== "none" && !existsSync(join(ROOT, `src/stores/${store}.ts`))) return `src/stores/${store}.ts does not exist yet`;
	const built = [join(DIST, `adapters/${framework}.js`), store === "none" ? null : join(DIST, `stores/${store}.js`)].filter((f): f is string => f !== null);
	const notBuilt = built.find((f) => !existsSync(f));
	if (notBuilt) return `${relative(ROOT, notBuilt)} was not built (see the build output above)`;
	return null;
}

// ------------------------------------------------------------------------------ services

/** sessionkit's Redis, and the peer's: two private servers, so each one's command counts are its library's alone. */
let redis: RedisService | null = null;
let peerRedis: RedisService | null = null;
let postgres: PostgresService | null = null;
/** Socket reads a snapshot itself adds, per Redis server. */
const redisCalibration = new Map<RedisService, number>();

/** The Redis server a Redis variant's store talks to; null for other stores. */
function redisOf(variant: Variant): RedisService | null {
	if (variant.store !== "redis") return null;
	return variant.kind === "peer" ? peerRedis : redis;
}
const notes: string[] = [];
const skipped: string[] = [];

function skip(line: string): void {
	skipped.push(line);
	log(`  skip  ${line}`);
}

async function resetStore(store: StoreName | "none"): Promise<void> {
	if (store === "redis") {
		await redis!.reset();
		await peerRedis!.reset();
	}
	if (store === "postgres") await postgres!.reset();
	if (store === "sqlite") {
		removeSqlite(SQLITE_PATH);
		removeSqlite(PEER_SQLITE_PATH);
	}
}

function serverEnv(variant: Variant): NodeJS.ProcessEnv {
	return {
		...process.env,
		NODE_ENV: "production",
		BENCH_STORE: variant.store,
		SESSIONKIT_DIST: DIST,
		BENCH_REDIS_URL: redisOf(variant)?.url ?? "",
		BENCH_POSTGRES_URL: postgres?.url ?? "",
		BENCH_SQLITE_PATH: sqlitePathOf(variant),
	};
}

interface RunningServer {
	port: number;
	process: Started;
}

async function startServer(variant: Variant, extraNodeArgs: string[] = []): Promise<RunningServer | string> {
	const [command, args] = pinned(0, process.execPath, [...extraNodeArgs, join(BENCH, "servers", variant.server)]);
	const started = await startProcess(command, args, {
		cwd: ROOT,
		env: { ...serverEnv(variant), ...variant.env },
		ready: (line) => line.startsWith("READY ") || line.startsWith("SKIP "),
		timeoutMs: 20_000,
		stdin: true,
	});
	if (started.line.startsWith("SKIP ")) {
		await started.stop();
		return started.line.slice(5);
	}
	const { port } = JSON.parse(started.line.slice(6)) as { port: number };
	return { port, process: started };
}

interface ServerStats {
	requests: number;
	calls: Record<string, number>;
	writes: number;
	queries: number;
	queryWrites: number;
	firstSet: { keyBytes: number; valueBytes: number } | null;
}

async function serverStats(server: RunningServer): Promise<ServerStats> {
	return JSON.parse(await server.process.ask("stats", "STATS ")) as ServerStats;
}

async function readCounter(server: RunningServer, cookie: string | null): Promise<number> {
	const reply = await get(`http://127.0.0.1:${server.port}/read`, cookie);
	const value = Number(reply.body);
	if (reply.status !== 200 || !Number.isFinite(value)) throw new Error(`GET /read answered ${reply.status} ${reply.body.slice(0, 200)}`);
	return value;
}

/** A window under this fraction of another window of the same server marks a stall of the machine. */
const STALL = 0.6;

function stalled(windows: number[] | null): boolean {
	return windows !== null && windows.length > 1 && Math.min(...windows) < STALL * Math.max(...windows);
}

/** One server's route under load, with the cookie it sends. */
interface LoadTarget {
	url: string;
	cookie: string | null;
}

type Measured = LoadResult & { windows: number[] };

interface WindowSet {
	/** One per target, in the order given. */
	results: Measured[];
	ceilingWindows: number[] | null;
}

/**
 * The measured load: `seconds` 1-second wrk windows on each target's route. req/s, p50 and p99
 * are the best window's (other processes share this machine and steal whole seconds at a time);
 * requests, duration and errors are the totals, which the per-request counters divide.
 *
 * With `ceilingUrl`, windows of the framework's no-session server are interleaved, so that a
 * ratio compares loads a second apart and a drift of the machine's speed cancels out. One
 * target: ceiling, variant, variant, ceiling (ABBA). Two (sessionkit and the peer, on the same
 * store): ceiling, sessionkit, peer, ceiling, peer, sessionkit, ceiling: each variant window
 * sits next to a ceiling window and the two libraries' windows alternate, neither always first.
 *
 * A set in which one window fell under 60% of another of the same server (the machine stalled:
 * seen here on routes where the server's work is identical) is measured once more, and the new
 * set gives the figures; the totals count both. When measuring it again would take the run past
 * its time bound (see `TimeBudget`), a stalled set is kept as measured, and the report counts it.
 */
async function loadWindows(targets: LoadTarget[], seconds: number, ceilingUrl: string | null = null): Promise<WindowSet> {
	const startedAt = Date.now();
	let set = await measureWindows(targets, seconds, ceilingUrl);
	if (set.results.some((r) => stalled(r.windows)) || stalled(set.ceilingWindows)) {
		if (!budget.allows((Date.now() - startedAt) / 1000)) {
			stalledKept++;
			return set;
		}
		const first = set;
		set = await measureWindows(targets, seconds, ceilingUrl);
		set.results.forEach((result, i) => {
			result.requests += first.results[i]!.requests;
			result.durationS += first.results[i]!.durationS;
			result.errors += first.results[i]!.errors;
		});
		remeasured++;
	}
	return set;
}

/** How many window sets were measured again because the machine stalled. */
let remeasured = 0;
/** Stalled window sets kept as measured: measuring them again would have taken the run past its bound. */
let stalledKept = 0;

async function measureWindows(targets: LoadTarget[], seconds: number, ceilingUrl: string | null): Promise<WindowSet> {
	const runs: LoadResult[][] = targets.map(() => []);
	const ceilingWindows: number[] = [];
	const ceilingWindow = async () => {
		if (ceilingUrl) ceilingWindows.push(Math.round((await load(ceilingUrl, { seconds: 1, connections: settings.connections, cookie: null })).reqPerSec));
	};
	const forward = targets.map((_, i) => i);
	const backward = [...forward].reverse();
	for (let i = 0; i < seconds; i++) {
		if (i % 2 === 0) await ceilingWindow();
		for (const t of i % 2 === 0 ? forward : backward) {
			runs[t]!.push(await load(targets[t]!.url, { seconds: 1, connections: settings.connections, cookie: targets[t]!.cookie }));
		}
		if (i % 2 === 1 || targets.length > 1 || (i === seconds - 1 && settings.pairAfter)) await ceilingWindow();
	}
	return { results: runs.map(summarise), ceilingWindows: ceilingUrl ? ceilingWindows : null };
}

function summarise(runs: LoadResult[]): Measured {
	const best = runs.reduce((a, b) => (b.reqPerSec > a.reqPerSec ? b : a));
	return {
		requests: runs.reduce((s, r) => s + r.requests, 0),
		durationS: runs.reduce((s, r) => s + r.durationS, 0),
		errors: runs.reduce((s, r) => s + r.errors, 0),
		reqPerSec: best.reqPerSec,
		p50Ms: best.p50Ms,
		p99Ms: best.p99Ms,
		windows: runs.map((r) => Math.round(r.reqPerSec)),
	};
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ------------------------------------------------------------------------------ variants

const entries: Entry[] = [];
const storedBytes: StoredBytes[] = [];

function blankEntry(variant: Variant, scenario: Entry["scenario"], result: Measured, ceilingWindows: number[] | null): Entry {
	return {
		framework: variant.framework,
		store: variant.store,
		scenario,
		library: variant.library,
		kind: variant.kind,
		storeModule: variant.storeModule,
		reqPerSec: result.reqPerSec,
		windows: result.windows,
		medianReqPerSec: median(result.windows),
		ceilingWindows,
		peerWindows: null,
		p50Ms: result.p50Ms,
		p99Ms: result.p99Ms,
		requests: result.requests,
		serverRequests: null,
		durationS: result.durationS,
		errors: result.errors,
		roundTripsPerRequest: null,
		roundTripSource: null,
		storeCallsPerRequest: null,
		storeCalls: {},
		writesPerRequest: null,
		redisCommands: null,
		redisWritesPerRequest: null,
		incrementsKept: null,
		ratioToCeiling: null,
		addedMicrosPerRequest: null,
		ratioToPeer: null,
	};
}

function describe(variant: Variant): string {
	return `${FRAMEWORK_LABEL[variant.framework]} × ${variant.store} × ${variant.library}${variant.kind === "peer" && variant.storeModule !== variant.library ? ` (${variant.storeModule})` : ""}`;
}

function sqlitePathOf(variant: Variant): string {
	return variant.kind === "peer" ? PEER_SQLITE_PATH : SQLITE_PATH;
}

/** The rows of a SQL variant's database, with their table. */
async function sqlRows(variant: Variant): Promise<Array<{ table: string; bytes: number }>> {
	if (variant.store === "postgres") return postgres!.rows();
	if (variant.store === "sqlite") return sqliteRows(sqlitePathOf(variant));
	return [];
}

/** The SQL tables that hold rows now: the login's record is then found in a table not among them. */
async function tablesWithRows(variant: Variant): Promise<Set<string>> {
	return new Set((await sqlRows(variant)).map((r) => r.table));
}

async function measureStoredBytes(open: OpenVariant, login: { setCookies: string[] }, tablesBefore: Set<string>): Promise<void> {
	const { variant, server } = open;
	if (variant.kind === "ceiling" || variant.store === "none") return;
	if (storedBytes.some((s) => s.library === variant.library && s.store === variant.store)) return;
	const base = { library: variant.library, store: variant.store, storeModule: variant.kind === "peer" && variant.storeModule !== variant.library ? variant.storeModule : "" };
	if (variant.store === "cookie") {
		const values = login.setCookies.map((c) => c.split(";")[0]!.split("=").slice(1).join("="));
		storedBytes.push({ ...base, recordBytes: values.reduce((s, v) => s + Buffer.byteLength(v), 0), indexBytes: 0, how: "Set-Cookie value(s), bytes" });
	} else if (variant.store === "memory") {
		const first = (await serverStats(server)).firstSet;
		if (first) storedBytes.push({ ...base, recordBytes: first.keyBytes + first.valueBytes, indexBytes: 0, how: "key + JSON of what set() received" });
	} else if (variant.store === "redis") {
		const keys = (await open.redis!.keys()).sort((a, b) => b.bytes - a.bytes);
		if (keys.length) {
			const [record, ...rest] = keys;
			storedBytes.push({ ...base, recordBytes: record!.bytes, indexBytes: rest.reduce((s, k) => s + k.bytes, 0), how: `Redis ${record!.type}: key + ${record!.type === "hash" ? "fields + values" : "value"}${rest.length ? `; ${rest.length} other key(s) as index` : ""}` });
		}
	} else {
		// On PostgreSQL the other library's server, measured beside this one in the same database,
		// may have stored its login already (on SQLite each library has a file of its own).
		const rows = (await sqlRows(variant)).filter((r) => !tablesBefore.has(r.table));
		const sorted = rows.sort((a, b) => b.bytes - a.bytes);
		if (sorted.length) {
			const [record, ...rest] = sorted;
			storedBytes.push({ ...base, recordBytes: record!.bytes, indexBytes: rest.reduce((s, r) => s + r.bytes, 0), how: `${variant.store} row of "${record!.table}": column values as text${rest.length ? `; ${rest.length} other row(s)` : ""}` });
		}
	}
}

/** The framework's no-session server, kept running while its variants are measured (paired windows). */
let ceilingServer: RunningServer | null = null;

/** A variant whose server runs, logged in where it should be. */
interface OpenVariant {
	variant: Variant;
	server: RunningServer;
	base: string;
	cookie: string | null;
	/** The Redis server its store talks to (Redis variants). */
	redis: RedisService | null;
	/** It has had the long warm-up that a server's first scenario gets. */
	warmed: boolean;
}

const CEILING_SCENARIO = { name: "ceiling" as const, path: "/counter", withCookie: false };

function scenariosOf(variant: Variant): Array<Scenario | typeof CEILING_SCENARIO> {
	if (variant.kind === "ceiling") return [CEILING_SCENARIO];
	const byLibrary = variant.kind === "peer" || variant.kind === "sessionkit" ? settings.quickScenarios?.[variant.kind] : undefined;
	const only: string[] | undefined = variant.scenarios ?? byLibrary;
	return only ? SCENARIOS.filter((s) => only.includes(s.name)) : SCENARIOS;
}

/** The scenarios a group of variants measures, one window set each, in the order they run. */
function plannedScenarios(variants: Variant[]): Array<Scenario | typeof CEILING_SCENARIO> {
	return [CEILING_SCENARIO, ...SCENARIOS].filter((scenario) => variants.some((v) => scenariosOf(v).includes(scenario)));
}

/** Starts the variant's server and logs in; a string says why it cannot run. */
async function openVariant(variant: Variant): Promise<OpenVariant | string> {
	let server: RunningServer | string;
	try {
		server = await startServer(variant);
	} catch (error) {
		return `the server did not start: ${(error as Error).message.split("\n").slice(0, 6).join(" | ")}`;
	}
	if (typeof server === "string") return server;
	const open: OpenVariant = { variant, server, base: `http://127.0.0.1:${server.port}`, cookie: null, redis: redisOf(variant), warmed: false };
	try {
		// The floor sets no cookie: it gets one as long as sessionkit's, so the request is the same size.
		const logsIn = variant.kind === "sessionkit" || variant.kind === "peer" || variant.login === true;
		if (variant.kind === "floor" && !logsIn) open.cookie = `sid=${"x".repeat(43)}`;
		if (logsIn) {
			const tablesBefore = await tablesWithRows(variant);
			const login = await get(`${open.base}/login`);
			open.cookie = cookieHeader(login.setCookies);
			if (login.status !== 200 || !open.cookie) throw new Error(`GET /login answered ${login.status} with no session cookie (${login.body.slice(0, 200)})`);
			await measureStoredBytes(open, login, tablesBefore);
		}
		return open;
	} catch (error) {
		await server.process.stop();
		return `failed: ${(error as Error).message.split("\n")[0]}\n${server.process.output().slice(-1500)}`;
	}
}

/**
 * Measures variants of one framework on one store together: sessionkit and the peer, or one
 * variant alone. Their servers run side by side and each scenario's windows interleave (see
 * `loadWindows`), so ×peer compares windows a second apart, as ×ceiling does.
 */
async function runVariants(variants: Variant[]): Promise<void> {
	for (const variant of variants) log(`\n▶ ${describe(variant)}`);
	const store = variants[0]!.store;
	const scenarios = plannedScenarios(variants);
	try {
		await resetStore(store);
	} catch (error) {
		for (const variant of variants) skip(`${describe(variant)}: cannot reset the ${store} store: ${(error as Error).message}`);
		budget.done(scenarios.length);
		return;
	}
	budget.starting();
	const open: OpenVariant[] = [];
	try {
		for (const variant of variants) {
			const opened = await openVariant(variant);
			if (typeof opened === "string") skip(`${describe(variant)}: ${opened}`);
			else open.push(opened);
		}
		for (const scenario of scenarios) {
			const members = open.filter((o) => scenariosOf(o.variant).includes(scenario));
			try {
				if (members.length > 0) await measureScenario(members, scenario);
			} catch (error) {
				for (const o of members) {
					skip(`${describe(o.variant)}: failed: ${(error as Error).message.split("\n")[0]}\n${o.server.process.output().slice(-1500)}`);
					open.splice(open.indexOf(o), 1);
					await o.server.process.stop();
				}
			} finally {
				budget.done();
			}
		}
	} finally {
		for (const o of open) {
			const { child } = o.server.process;
			if (o.variant.kind === "ceiling" && child.exitCode === null && child.signalCode === null) ceilingServer = o.server;
			else await o.server.process.stop();
		}
	}
}

async function measureScenario(members: OpenVariant[], scenario: Scenario | typeof CEILING_SCENARIO): Promise<void> {
	const cookieOf = (o: OpenVariant) => (scenario.withCookie ? o.cookie : null);
	for (const o of members) {
		const url = `${o.base}${scenario.path}`;
		if (!o.warmed && settings.warmupSeconds > 0) await load(url, { seconds: settings.warmupSeconds, connections: settings.connections, cookie: cookieOf(o) });
		if (settings.warmupScenarioSeconds > 0) await load(url, { seconds: settings.warmupScenarioSeconds, connections: settings.connections, cookie: cookieOf(o) });
		else await burst(url, cookieOf(o), settings.warmupBurst.requests, settings.warmupBurst.seconds);
		o.warmed = true;
	}

	const before = [];
	for (const o of members) {
		before.push({
			counter: scenario.name === "counter" ? await readCounter(o.server, o.cookie) : 0,
			stats: await serverStats(o.server),
			redis: o.redis ? await o.redis.snapshot() : null,
		});
	}
	const isCeiling = scenario.name === "ceiling";
	const seconds = isCeiling ? Math.ceil(settings.duration * 1.5) : settings.duration;
	const ceilingUrl = !isCeiling && ceilingServer ? `http://127.0.0.1:${ceilingServer.port}/counter` : null;
	const set = await loadWindows(members.map((o) => ({ url: `${o.base}${scenario.path}`, cookie: cookieOf(o) })), seconds, ceilingUrl);
	await sleep(250);

	const peerIndex = members.findIndex((o) => o.variant.kind === "peer");
	for (const [i, o] of members.entries()) {
		const { variant } = o;
		const result = set.results[i]!;
		const entry = blankEntry(variant, scenario.name, result, set.ceilingWindows);
		if (variant.kind === "sessionkit" && peerIndex >= 0) entry.peerWindows = set.results[peerIndex]!.windows;
		if (!isCeiling) await countPerRequest(o, scenario, entry, before[i]!);
		if (result.errors > 0) entry.note = `${entry.note ? `${entry.note}; ` : ""}${result.errors} errors/non-2xx`;
		entries.push(entry);
		log(
			`  ${(members.length > 1 ? `${scenario.name} · ${variant.library}` : scenario.name).padEnd(9)} ${result.reqPerSec.toFixed(0).padStart(7)} req/s  p50 ${result.p50Ms.toFixed(2)} ms  p99 ${result.p99Ms.toFixed(2)} ms` +
				(entry.roundTripsPerRequest !== null ? `  RT/req ${entry.roundTripsPerRequest.toFixed(2)}` : "") +
				(entry.storeCallsPerRequest !== null ? `  calls/req ${entry.storeCallsPerRequest.toFixed(2)}` : "") +
				(entry.writesPerRequest !== null ? `  writes/req ${entry.writesPerRequest.toFixed(2)}` : "") +
				(entry.redisCommands ? `  redis ${Object.entries(entry.redisCommands).map(([k, v]) => `${k}×${v}`).join(" ")}` : "") +
				(entry.incrementsKept !== null ? `  kept ${(entry.incrementsKept * 100).toFixed(1)}%` : "") +
				(result.errors ? `  errors ${result.errors}` : ""),
		);
	}
}

/** Store calls, writes, round trips and increments kept, per request the server received in the windows. */
async function countPerRequest(o: OpenVariant, scenario: Scenario, entry: Entry, before: { counter: number; stats: ServerStats; redis: RedisSnapshot | null }): Promise<void> {
	const { variant } = o;
	const redisAfter = o.redis ? await o.redis.snapshot() : null;
	const statsAfter = await serverStats(o.server);
	// Per request = per request the server received in the windows (wrk counts only those it saw
	// completed; a few dozen were still in flight when it stopped).
	const received = statsAfter.requests - before.stats.requests;
	const n = Math.max(1, received > 0 ? received : entry.requests);
	entry.serverRequests = received;
	let calls = 0;
	for (const [method, after] of Object.entries(statsAfter.calls)) {
		const delta = after - (before.stats.calls[method] ?? 0);
		if (delta > 0) entry.storeCalls[method] = round(delta / n);
		calls += delta;
	}
	entry.storeCallsPerRequest = calls / n;
	entry.writesPerRequest = (statsAfter.writes - before.stats.writes) / n;
	if (variant.store === "cookie") entry.roundTripsPerRequest = 0;
	if (variant.store === "cookie" && variant.kind === "peer") {
		// iron-session has no store object to count: the cookie is all there is.
		entry.storeCallsPerRequest = null;
		entry.storeCalls = {};
		entry.writesPerRequest = null;
	}
	if (variant.store === "postgres") {
		entry.roundTripsPerRequest = (statsAfter.queries - before.stats.queries) / n;
		entry.roundTripSource = "pg queries counted in the server process";
		entry.writesPerRequest = (statsAfter.queryWrites - before.stats.queryWrites) / n;
	}
	if (before.redis && redisAfter) {
		const counts = redisCounts(before.redis, redisAfter);
		entry.redisWritesPerRequest = counts.writes / n;
		entry.redisCommands = Object.fromEntries(Object.entries(counts.byCommand).map(([k, v]) => [k, round(v / n)]));
	}
	if (scenario.name === "counter") {
		if (variant.store === "cookie") entry.note = "cookie store: wrk replays one cookie, so increments cannot accumulate";
		else entry.incrementsKept = ((await readCounter(o.server, o.cookie)) - before.counter) / n;
	}
	if (o.redis) {
		// Round trips: socket reads Redis processed during sequential requests, minus the snapshot's own.
		const url = `${o.base}${scenario.path}`;
		const p0 = await o.redis.snapshot();
		for (let i = 0; i < settings.probeRequests; i++) await get(url, scenario.withCookie ? o.cookie : null);
		const p1 = await o.redis.snapshot();
		entry.roundTripsPerRequest = (p1.reads - p0.reads - (redisCalibration.get(o.redis) ?? 0)) / settings.probeRequests;
		entry.roundTripSource = "redis INFO total_reads_processed, sequential requests";
	}
}

const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;

function median(values: number[]): number {
	const sorted = [...values].sort((a, b) => a - b);
	const mid = sorted.length >> 1;
	return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const round = (x: number) => Math.round(x * 1000) / 1000;

// ------------------------------------------------------------------------------ build, micro

function build(): void {
	mkdirSync(TMP, { recursive: true });
	const errors = compileSrc(DIST);
	if (errors.length > 0) {
		log(`build: tsc reported errors (the files it emitted are used; variants whose module is missing are skipped):\n  ${errors.slice(0, 10).join("\n  ")}${errors.length > 10 ? `\n  … ${errors.length - 10} more lines` : ""}`);
		notes.push(`tsc reported errors while building src (work in progress elsewhere); the emitted JavaScript was used.`);
	}
	log(`build: src compiled to ${relative(ROOT, DIST)}`);
}

async function runMicro(): Promise<MicroResult[]> {
	const out = join(TMP, "micro.json");
	rmSync(out, { force: true });
	const [command, args] = pinned(0, process.execPath, ["--import", "tsx", join(BENCH, "micro.ts"), `--json=${out}`, ...(quick ? ["--quick"] : [])]);
	const run = await runToEnd(command, args, { cwd: ROOT, env: { ...process.env, SESSIONKIT_DIST: DIST }, timeoutMs: 120_000 });
	process.stdout.write(run.stdout);
	if (run.code !== 0 || !existsSync(out)) {
		log(`micro-benchmarks failed (exit ${run.code}): ${run.stderr.slice(-1500)}`);
		return [];
	}
	return JSON.parse(readFileSync(out, "utf8")) as MicroResult[];
}

// ------------------------------------------------------------------------------ report

function versionOf(name: string): string {
	try {
		return (JSON.parse(readFileSync(join(ROOT, "node_modules", name, "package.json"), "utf8")) as { version: string }).version;
	} catch {
		return "not installed";
	}
}

function toolVersion(): string {
	if (tool === "wrk") {
		const run = spawnSync("wrk", ["-v"], { encoding: "utf8" });
		return (`${run.stdout}${run.stderr}`.split("\n")[0] ?? "wrk").replace(/\s*Copyright.*/, "").trim();
	}
	return `autocannon ${versionOf("autocannon")}`;
}

function gitCommit(): string {
	const run = spawnSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT, encoding: "utf8" });
	return run.status === 0 ? run.stdout.trim() : "unknown";
}

function fillRatios(): void {
	const ceilings = new Map<Framework, number>();
	for (const e of entries) if (e.kind === "ceiling") ceilings.set(e.framework, e.reqPerSec);
	for (const e of entries) {
		if (e.kind === "ceiling") {
			e.ratioToCeiling = 1;
			continue;
		}
		const paired = e.ceilingWindows?.length ? e.ceilingWindows : null;
		const ceiling = ceilings.get(e.framework);
		if (paired) {
			const variantMean = mean(e.windows);
			const ceilingMean = mean(paired);
			e.ratioToCeiling = variantMean / ceilingMean;
			e.addedMicrosPerRequest = 1e6 / variantMean - 1e6 / ceilingMean;
		} else if (ceiling) {
			e.ratioToCeiling = e.reqPerSec / ceiling;
			e.addedMicrosPerRequest = 1e6 / e.reqPerSec - 1e6 / ceiling;
		}
	}
	for (const e of entries) {
		if (e.kind === "sessionkit") {
			const peer = entries.find((p) => p.kind === "peer" && p.framework === e.framework && p.store === e.store && p.scenario === e.scenario);
			if (!peer) continue;
			if (e.peerWindows?.length) e.ratioToPeer = mean(e.windows) / mean(e.peerWindows);
			else e.ratioToPeer = peer.ratioToCeiling && e.ratioToCeiling && peer.ceilingWindows && e.ceilingWindows ? e.ratioToCeiling / peer.ratioToCeiling : e.reqPerSec / peer.reqPerSec;
		}
	}
}

function writeReport(micro: MicroResult[], startedAt: Date, loadBefore: number[]): Report {
	fillRatios();
	const targets = evaluateTargets(entries, micro, quick);
	const versions: Record<string, string> = { sessionkit: `${versionOf("../")} (${gitCommit()}, src compiled with tsc ${versionOf("typescript")})` };
	for (const name of ["express", "express-session", "fastify", "@fastify/session", "@fastify/cookie", "koa", "koa-session", "hono", "@hono/node-server", "iron-session", "connect-redis", "redis", "connect-pg-simple", "ioredis", "pg", "better-sqlite3", "better-express-store", "cookie", "tinybench", "autocannon"]) {
		versions[name] = versionOf(name);
	}
	const loadAfter = os.loadavg();
	const report: Report = {
		date: startedAt.toISOString(),
		quick,
		machine: {
			cpu: cpuModel(),
			cores: os.availableParallelism(),
			memory: `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
			os: `${os.type()} ${os.release()} ${os.arch()}`,
			node: process.version,
			"load average (1 min) before → after": `${loadBefore[0]!.toFixed(2)} → ${loadAfter[0]!.toFixed(2)}`,
			redis: redis && peerRedis ? `sessionkit: ${redis.description} · peers: ${peerRedis.description}` : "not used",
			postgres: postgres?.description ?? "not used",
		},
		versions,
		settings: {
			tool: toolVersion(),
			"load settings": `${tool === "wrk" ? `wrk -t1 -c${settings.connections} -d1s --timeout 5s` : `autocannon -c ${settings.connections} -d 1`}, ${settings.duration} 1-s windows per scenario, each paired with a 1-s window of the no-session server (its own first run: ${Math.ceil(settings.duration * 1.5)} windows)${settings.quickScenarios ? `; quick: the peers run the ${settings.quickScenarios.peer.join(", ")} scenario only, sessionkit the ${settings.quickScenarios.sessionkit.join(", ")} scenarios` : ""}`,
			"figures": "req/s, p50, p99: the best 1-s window (every window's req/s, and the paired ceiling windows, are in latest.json); ratios: paired windows (see below); per-request counts: totals over all windows",
			stalls: `a set of windows in which one fell under ${STALL * 100}% of another of the same server is measured once more and the new set used: ${remeasured} set(s) in this run${stalledKept > 0 ? `; ${stalledKept} more stalled set(s) kept as measured (measuring them again would have taken the run past ${settings.boundS} s)` : ""}`,
			"CPU idle": cpuLatency.description,
			pinning: hasTaskset ? "server: taskset -c 0 · load generator: taskset -c 1 · Redis/PostgreSQL: unpinned" : "none (taskset missing or one core)",
			"warm-up": settings.warmupSeconds
				? `${settings.warmupSeconds} s load, then ${settings.warmupScenarioSeconds} s load, before a server's first scenario; ${settings.warmupScenarioSeconds} s load before each of its other scenarios (on the scenario's route)`
				: `up to ${settings.warmupBurst.requests} requests (16 at a time, for at most ${settings.warmupBurst.seconds} s) before every scenario`,
			"server env": "NODE_ENV=production, each server in its own process, sessionkit from the compiled src",
			"sessionkit options": "createSessions defaults (idle 30 min, touchAfter 3 min), store as named",
			"peer options": "express-session: resave false, saveUninitialized false · @fastify/session: saveUninitialized false, rolling false · koa-session: defaults (signed), external store · iron-session: defaults",
		},
		notes: [
			...notes,
			"The ceiling is each framework's server without session middleware, measured once per framework (its routes are identical) for 1.5× the duration; every ratio in a row comes from this same run.",
			"The session cookie is sent on (a), (b) and (c); (d) sends none, so every request creates and stores a new login session.",
			"connect-redis runs on node-redis (the client it supports); sessionkit and the koa-session store run on ioredis. sessionkit talks to one private redis-server, the peers to another (same binary and settings), so INFO counts each library's commands alone.",
			"SQLite: express-session's store is better-express-store (on better-sqlite3, as sessionkit's store); each library has a file of its own, both in WAL mode with SQLite's default synchronous setting.",
			"Other processes share this 2-core machine: the load average above says how noisy the run was.",
			...(tool === "wrk" ? [] : ["wrk is not installed (apt-get install -y wrk): autocannon was used, which itself needs CPU; figures are lower and noisier than with wrk."]),
		],
		skipped,
		entries,
		storedBytes,
		micro,
		targets,
	};
	mkdirSync(RESULTS, { recursive: true });
	writeFileSync(join(RESULTS, "latest.json"), `${JSON.stringify(report, null, "\t")}\n`);
	writeFileSync(join(RESULTS, "latest.md"), `${markdown(report)}\n`);
	writeFileSync(join(RESULTS, "latest.svg"), svgChart(report));
	return report;
}

// ------------------------------------------------------------------------------ main

async function main(): Promise<void> {
	const startedAt = new Date();
	const loadBefore = os.loadavg();
	log(`sessionkit bench${quick ? " (quick)" : ""}: ${cpuModel()}, ${os.availableParallelism()} cores, Node ${process.version}, ${toolVersion()}${hasTaskset ? ", pinned (server core 0, load core 1)" : ", not pinned"}`);
	log(`CPU idle: ${cpuLatency.description}`);
	if (tool !== "wrk") log("note: wrk is not installed (apt-get install -y wrk); falling back to autocannon");
	build();

	if (flag("profile")) {
		await profile({ root: ROOT, bench: BENCH, dist: DIST, results: RESULTS, tmp: TMP, seconds: Number(option("duration") ?? 8), connections: settings.connections, log });
		return;
	}

	const stores = new Set<StoreName>(onlyStores ?? (quick ? QUICK_STORES : ["memory", "cookie", "redis", "postgres", "sqlite"]));
	const plans = PLAN.filter((p) => !onlyFrameworks || onlyFrameworks.includes(p.framework));
	const wanted = (store: StoreName) => stores.has(store) && plans.some((p) => p.sessionkitStores.includes(store) || (p.peer?.stores[store] ?? null) !== null);
	if (wanted("redis")) {
		redis = await startRedis(log, 15).catch((error: Error) => (log(`skip redis: ${error.message}`), null));
		peerRedis = redis && (await startRedis(log, 14).catch((error: Error) => (log(`skip redis: ${error.message}`), null)));
		if (redis && peerRedis) {
			for (const service of [redis, peerRedis]) {
				const a = await service.snapshot();
				const b = await service.snapshot();
				redisCalibration.set(service, b.reads - a.reads);
			}
			log(`redis: sessionkit's ${redis.description}; the peers' ${peerRedis.description}`);
		} else {
			await redis?.stop();
			redis = null;
			skipped.push("every Redis variant: no Redis server (see above)");
		}
	}
	if (wanted("postgres")) {
		postgres = await startPostgres(log);
		if (postgres) log(`postgres: ${postgres.description}`);
		else skipped.push("every PostgreSQL variant: no PostgreSQL server (see above)");
	}

	const frameworks = plans.map((plan) => ({ framework: plan.framework, blocks: frameworkBlocks(plan, stores) }));
	for (const { blocks } of frameworks) for (const block of blocks) budget.plan(plannedScenarios(block).length);
	try {
		for (const { framework, blocks } of frameworks) {
			log(`\n━━ ${FRAMEWORK_LABEL[framework]}`);
			try {
				for (const block of blocks) {
					// Without its ceiling, a floor has nothing to be the floor of.
					if (block[0]!.kind === "floor" && !ceilingServer) budget.done(plannedScenarios(block).length);
					else await runVariants(block);
				}
			} finally {
				await ceilingServer?.process.stop();
				ceilingServer = null;
			}
		}
	} finally {
		await redis?.stop();
		await peerRedis?.stop();
		await postgres?.stop();
	}
	return finish(startedAt, loadBefore);
}

/**
 * The variants of one framework, in the groups that run side by side, in order: its ceiling;
 * what a session costs at least in it (one empty middleware on the untouched route, where the
 * framework has middleware, and a minimal hand-written session on the counter route; quick runs
 * skip the first, to stay under two minutes); then, per store, sessionkit and the peer.
 */
function frameworkBlocks(plan: (typeof PLAN)[number], stores: Set<StoreName>): Variant[][] {
	const { framework } = plan;
	const blocks: Variant[][] = [[{ framework, library: "none", kind: "ceiling", store: "none", storeModule: "", server: `${framework}/none.mjs` }]];
	if (framework !== "node" && !quick) {
		blocks.push([{ framework, library: "empty middleware", kind: "floor", store: "none", storeModule: "", server: `${framework}/none.mjs`, env: { BENCH_EMPTY_MIDDLEWARE: "1" }, scenarios: ["untouched"] }]);
	}
	blocks.push([{ framework, library: "minimal session", kind: "floor", store: "none", storeModule: "", server: `${framework}/minimal-session.mjs`, scenarios: ["counter"], login: true }]);
	const planStores = [...new Set<StoreName>([...plan.sessionkitStores, ...(Object.keys(plan.peer?.stores ?? {}) as StoreName[])])].filter((s) => stores.has(s));
	for (const store of planStores) {
		if ((store === "redis" && !redis) || (store === "postgres" && !postgres)) continue;
		const variants: Variant[] = [];
		if (plan.sessionkitStores.includes(store)) {
			const variant: Variant = { framework, library: "sessionkit", kind: "sessionkit", store, storeModule: store, server: `${framework}/sessionkit.mjs` };
			const missing = missingSource(framework, store);
			if (missing) skip(`${describe(variant)}: ${missing}`);
			else variants.push(variant);
		}
		const peerStore = plan.peer?.stores[store];
		if (plan.peer && peerStore) variants.push({ framework, library: plan.peer.library, kind: "peer", store, storeModule: peerStore, server: plan.peer.server });
		if (variants.length) blocks.push(variants);
	}
	return blocks;
}

async function finish(startedAt: Date, loadBefore: number[]): Promise<void> {
	const micro = flag("no-micro") ? [] : (log("\n━━ micro-benchmarks"), await runMicro());
	const report = writeReport(micro, startedAt, loadBefore);
	log(`\n${terminalTable(report.entries)}`);
	if (report.storedBytes.length) {
		log("\nstored bytes, typical login session:");
		for (const s of report.storedBytes) log(`  ${s.store.padEnd(8)} ${(s.library + (s.storeModule ? ` (${s.storeModule})` : "")).padEnd(36)} ${String(s.recordBytes).padStart(5)} B${s.indexBytes ? ` + ${s.indexBytes} B index` : ""}  (${s.how})`);
	}
	log(`\ntargets:\n${targetsText(report.targets)}`);
	if (skipped.length) log(`\nskipped:\n  ${skipped.map((s) => s.split("\n")[0]).join("\n  ")}`);
	log(`\nwrote ${["latest.md", "latest.json", "latest.svg"].map((f) => relative(ROOT, join(RESULTS, f))).join(", ")} in ${((Date.now() - startedAt.getTime()) / 1000).toFixed(0)} s`);
}

try {
	await main();
} finally {
	closeAgent();
	cpuLatency.release();
}
