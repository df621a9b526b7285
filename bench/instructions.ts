/**
 * `npm run bench:instructions [-- --frameworks=node,fastify --requests=6000]`: instructions a
 * request costs each server (the no-session ceiling, the minimal-session floor, sessionkit) on the
 * untouched and counter routes, counted by valgrind's callgrind. `--store=cookie` and
 * `--only=sessionkit:counter,iron-session:counter` (library:route pairs, any server in
 * bench/servers) count other variants; their results go to bench/results/tmp, not over the table. A count does not move with the
 * machine's load, where req/s moves by up to 40% here: it can tell apart changes of 1%.
 *
 * Per server: warm-up on two connections one after the other (closing the first one's makes V8
 * throw away part of node's optimized HTTP code, which the second warm-up lets it optimize again;
 * counted after one warm-up only, recompiling was 58% of the instructions), then the counters are
 * zeroed, `--requests` sequential keep-alive requests sent on a third connection, and the counts
 * dumped. User-space instructions of every thread of the server's process: the kernel's TCP work
 * is not counted, so a ratio here is lower than the same ratio in req/s.
 *
 * Needs valgrind (Debian's package). Two servers at a time; about 75 s a server.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { compileSrc } from "./lib/build.js";
import { commandExists, startProcess } from "./lib/proc.js";
import type { Framework } from "./lib/types.js";
import { FRAMEWORK_LABEL } from "./lib/types.js";

const BENCH = dirname(fileURLToPath(import.meta.url));
const RESULTS = join(BENCH, "results");
const TMP = join(RESULTS, "tmp");
const DIST = join(TMP, "dist-instructions");

const argv = process.argv.slice(2);
const option = (name: string) => argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
const frameworks = (option("frameworks")?.split(",") ?? ["node", "express", "fastify", "koa", "hono"]) as Framework[];
const requests = Number(option("requests") ?? 6000);
const warmup = Number(option("warmup") ?? 8000);
const store = option("store") ?? "memory";
const only = option("only")?.split(",").map((pair) => {
	const [library, route] = pair.split(":");
	return { library: library as Library, route: route as Route };
});

type Library = "none" | "minimal-session" | "sessionkit" | "iron-session";
type Route = "untouched" | "counter" | "read";

interface Count {
	framework: Framework;
	library: Library;
	route: Route;
	/** Every thread of the server's process, user space, per request. */
	perRequest: number;
	/** Of which V8's optimizing compiler and its garbage collector. */
	compilerPerRequest: number;
	gcPerRequest: number;
}

const JOBS: Array<{ library: Library; route: Route }> = [
	{ library: "none", route: "untouched" },
	{ library: "none", route: "counter" },
	{ library: "minimal-session", route: "counter" },
	{ library: "sessionkit", route: "untouched" },
	{ library: "sessionkit", route: "counter" },
];

/** `count` GET requests one after the other on one new keep-alive connection, closed after. */
async function sequential(url: string, cookie: string | null, count: number): Promise<void> {
	const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
	const one = () =>
		new Promise<void>((resolve, reject) => {
			const req = http.get(url, { agent, headers: cookie ? { cookie } : {} }, (res) => {
				res.resume();
				res.on("end", resolve);
			});
			req.on("error", reject);
		});
	try {
		for (let i = 0; i < count; i++) await one();
	} finally {
		agent.destroy();
	}
}

/**
 * The session cookie from `/login`, on a connection of its own that closes at once (not load.ts's
 * shared keep-alive agent): an idle connection the server closed later would run its close code
 * in the counted requests.
 */
async function loginCookie(url: string): Promise<string | null> {
	return new Promise((resolve, reject) => {
		http.get(`${url}/login`, { agent: false }, (res) => {
			res.resume();
			res.on("end", () => resolve(res.headers["set-cookie"]?.[0]?.split(";")[0] ?? null));
		}).on("error", reject);
	});
}

/** An inclusive cost from callgrind_annotate's listing: the first function whose name contains `name`. */
function inclusive(listing: string, name: string): number {
	const line = listing.split("\n").find((l) => l.includes(name));
	return line ? Number(line.trim().split(/\s+/)[0]!.replaceAll(",", "")) : 0;
}

async function measure(framework: Framework, library: Library, route: Route): Promise<Count> {
	const server = join(BENCH, "servers", framework, `${library}.mjs`);
	const out = join(TMP, `callgrind.${framework}.${library}.${route}`);
	rmSync(`${out}.1`, { force: true });
	const started = await startProcess("valgrind", ["--tool=callgrind", "--smc-check=all", `--callgrind-out-file=${out}`, process.execPath, server], {
		env: { ...process.env, NODE_ENV: "production", BENCH_STORE: store, SESSIONKIT_DIST: DIST },
		ready: (line) => line.startsWith("READY ") || line.startsWith("SKIP "),
		timeoutMs: 120_000,
		graceMs: 10_000,
		stdin: true,
	});
	try {
		if (started.line.startsWith("SKIP ")) throw new Error(`${framework}/${library}: ${started.line}`);
		const { port, pid } = JSON.parse(started.line.slice("READY ".length)) as { port: number; pid: number };
		const base = `http://127.0.0.1:${port}`;
		const cookie = await loginCookie(base);
		const url = `${base}/${route}`;
		await sequential(url, cookie, warmup);
		await sequential(url, cookie, warmup);
		spawnSync("callgrind_control", ["-z", String(pid)], { stdio: "ignore" });
		await sequential(url, cookie, requests);
		spawnSync("callgrind_control", ["-d", String(pid)], { stdio: "ignore" });
		const dump = `${out}.1`;
		for (let i = 0; i < 100 && !existsSync(dump); i++) await new Promise((resolve) => setTimeout(resolve, 100));
		const totals = /^(?:summary|totals): (\d+)/m.exec(readFileSync(dump, "utf8"));
		if (!totals) throw new Error(`${dump}: no totals line`);
		const listing = spawnSync("callgrind_annotate", ["--inclusive=yes", dump], { encoding: "utf8", maxBuffer: 64 << 20 }).stdout;
		return {
			framework,
			library,
			route,
			perRequest: Math.round(Number(totals[1]) / requests),
			compilerPerRequest: Math.round(inclusive(listing, "OptimizingCompileDispatcher::CompileTask::RunInternal") / requests),
			gcPerRequest: Math.round(inclusive(listing, "v8::internal::Heap::CollectGarbage") / requests),
		};
	} finally {
		await started.stop();
		rmSync(`${out}.1`, { force: true });
	}
}

function table(counts: Count[]): string {
	const of = (f: Framework, l: Library, r: Route) => counts.find((c) => c.framework === f && c.library === l && c.route === r);
	const ratio = (a?: Count, b?: Count) => (a && b ? (b.perRequest / a.perRequest).toFixed(2) : "—");
	const k = (c?: Count) => (c ? `${(c.perRequest / 1000).toFixed(1)}k` : "—");
	const lines = [
		"| framework | ceiling: untouched / counter | floor: counter (×ceiling) | sessionkit: untouched (×ceiling) | sessionkit: counter (×ceiling) |",
		"| --- | --: | --: | --: | --: |",
	];
	for (const f of frameworks) {
		const ceilU = of(f, "none", "untouched");
		const ceilC = of(f, "none", "counter");
		const floor = of(f, "minimal-session", "counter");
		const skU = of(f, "sessionkit", "untouched");
		const skC = of(f, "sessionkit", "counter");
		lines.push(`| ${FRAMEWORK_LABEL[f]} | ${k(ceilU)} / ${k(ceilC)} | ${k(floor)} (${ratio(floor, ceilC)}) | ${k(skU)} (${ratio(skU, ceilU)}) | ${k(skC)} (${ratio(skC, ceilC)}) |`);
	}
	return lines.join("\n");
}

async function main(): Promise<void> {
	if (!commandExists("valgrind") || !commandExists("callgrind_control")) {
		console.error("bench:instructions needs valgrind (apt-get install valgrind)");
		process.exit(2);
	}
	mkdirSync(TMP, { recursive: true });
	const errors = compileSrc(DIST);
	if (errors.length > 0) console.log(`tsc reported errors; the emitted JavaScript is used:\n  ${errors.slice(0, 10).join("\n  ")}`);
	const queue = frameworks.flatMap((framework) => (only ?? JOBS).map((job) => ({ framework, ...job })));
	const counts: Count[] = [];
	const worker = async () => {
		for (let job = queue.shift(); job; job = queue.shift()) {
			const count = await measure(job.framework, job.library, job.route);
			console.log(`${job.framework} ${job.library} /${job.route}: ${count.perRequest} instructions a request (compiler ${count.compilerPerRequest}, GC ${count.gcPerRequest})`);
			counts.push(count);
		}
	};
	await Promise.all([worker(), worker()]);
	const settings = `callgrind, ${warmup} + ${warmup} warm-up requests on two connections, ${requests} counted; ${store} store; node ${process.version}`;
	if (only !== undefined || store !== "memory") {
		writeFileSync(join(TMP, "instructions.json"), `${JSON.stringify({ date: new Date().toISOString(), settings, counts }, null, "\t")}\n`);
		console.log(`\nwritten: bench/results/tmp/instructions.json`);
		return;
	}
	const markdown = `# Instructions a request\n\n${settings}; ×ceiling: the ceiling's count over the variant's (as req/s would be).\n\n${table(counts)}\n`;
	writeFileSync(join(RESULTS, "instructions.md"), markdown);
	writeFileSync(join(RESULTS, "instructions.json"), `${JSON.stringify({ date: new Date().toISOString(), settings, counts }, null, "\t")}\n`);
	console.log(`\n${table(counts)}\n\nwritten: bench/results/instructions.md, bench/results/instructions.json`);
}

await main();
