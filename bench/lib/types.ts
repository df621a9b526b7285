export type Framework = "node" | "express" | "fastify" | "koa" | "hono";
export type StoreName = "memory" | "cookie" | "redis" | "postgres" | "sqlite";
export type ScenarioName = "untouched" | "counter" | "read" | "create";
/** "floor": what a session costs at least: the no-session server with one empty middleware (untouched route), or a minimal hand-written session (counter route). */
export type Kind = "ceiling" | "floor" | "sessionkit" | "peer";

export const FRAMEWORK_LABEL: Record<Framework, string> = {
	node: "node:http",
	express: "Express 5",
	fastify: "Fastify 5",
	koa: "Koa 3",
	hono: "Hono 4",
};

export const SCENARIO_LABEL: Record<ScenarioName | "ceiling", string> = {
	untouched: "(a) untouched route",
	counter: "(b) counter, read+write",
	read: "(c) read-only",
	create: "(d) new session",
	ceiling: "no session (ceiling)",
};

/** One measured (framework × store × scenario × library). */
export interface Entry {
	framework: Framework;
	store: StoreName | "none";
	scenario: ScenarioName | "ceiling";
	library: string;
	kind: Kind;
	/** The peer's store module, e.g. "connect-redis". */
	storeModule: string;
	/** Best 1-second window (req/s, and the p50/p99 of that window). */
	reqPerSec: number;
	/** Every window's req/s, and their median. */
	windows: number[];
	medianReqPerSec: number;
	p50Ms: number;
	p99Ms: number;
	/** Requests completed, as the load generator counted them. */
	requests: number;
	/** Requests the server received in the same window (per-request figures divide by this). */
	serverRequests: number | null;
	durationS: number;
	errors: number;
	/** Sequential waits on the store per request (networked stores); `null` for in-process stores. */
	roundTripsPerRequest: number | null;
	roundTripSource: string | null;
	/** Calls into the store object per request (bench-only counting wrapper). */
	storeCallsPerRequest: number | null;
	/** Calls per request by store method, e.g. { get: 1, merge: 1 }. */
	storeCalls: Record<string, number>;
	/** Store writes per request: set/replace/merge/touch/delete calls on the store object (PostgreSQL: INSERT/UPDATE/DELETE statements). */
	writesPerRequest: number | null;
	/** Redis commands per request, by name (INFO commandstats; commands run inside Lua scripts are included). */
	redisCommands: Record<string, number> | null;
	/** Redis commands that change data per request, by INFO commandstats (script internals included). */
	redisWritesPerRequest: number | null;
	/** Counter scenario: (value read back − value before) / requests completed. */
	incrementsKept: number | null;
	/** req/s of the framework's no-session server in the 1-s windows interleaved with `windows`; null for the ceiling itself. */
	ceilingWindows: number[] | null;
	/** sessionkit's entries: req/s of the peer's server in the windows interleaved with `windows` (same store, same scenario); else null. */
	peerWindows: number[] | null;
	/** Mean of the variant's windows over the mean of the interleaved ceiling windows (or, unpaired, over the ceiling's best window). */
	ratioToCeiling: number | null;
	/** CPU time the session layer adds per request on the server core: 1/req·s − 1/ceiling req·s, in µs. */
	addedMicrosPerRequest: number | null;
	/** Mean of `windows` over the mean of `peerWindows`; without them, ×ceiling over the peer's ×ceiling. */
	ratioToPeer: number | null;
	note?: string;
}

export interface StoredBytes {
	library: string;
	store: StoreName;
	storeModule: string;
	/** The session record, key included. */
	recordBytes: number;
	/** Other keys/rows the store keeps for it (e.g. a subject index). */
	indexBytes: number;
	how: string;
}

export interface MicroResult {
	name: string;
	opsPerSec: number;
	meanUs: number;
	p99Us: number;
}

export interface Target {
	name: string;
	goal: string;
	measured: string;
	met: boolean | null;
}

export interface Report {
	date: string;
	quick: boolean;
	machine: Record<string, string | number>;
	versions: Record<string, string>;
	settings: Record<string, string | number | boolean>;
	notes: string[];
	skipped: string[];
	entries: Entry[];
	storedBytes: StoredBytes[];
	micro: MicroResult[];
	targets: Target[];
}
