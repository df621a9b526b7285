/**
 * Server instructions per request, counted by valgrind's callgrind: a measure that, unlike
 * req/s, barely moves with what else the machine is doing. Each server runs under callgrind
 * (`node --predictable`: one thread, so garbage collection and compilation are counted too),
 * gets the login session, serves a warm-up, and only then is counted over a fixed number of
 * requests (10 in flight, keep-alive, from this process). Kernel time (the socket writes) is
 * not counted: this measures the JavaScript a session layer adds, not the whole request.
 *
 *   npm run bench:instructions -- node/none node/minimal-session node/sessionkit
 *   npm run bench:instructions -- --route=/untouched --requests=2000 express/none express/sessionkit
 *
 * A server is `<framework>/<library>` from bench/servers; BENCH_STORE picks sessionkit's store
 * (memory by default). The first server is the base of the ratio column.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { Agent, get } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { commandExists } from "./lib/proc.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const DIST = join(ROOT, "bench/results/tmp/dist-instructions");
const WARM_UP = 4000;

interface Options {
	route: string;
	requests: number;
	servers: string[];
}

function parseArgs(argv: string[]): Options {
	const options: Options = { route: "/counter", requests: 1500, servers: [] };
	for (const arg of argv) {
		const [name, value] = arg.split("=", 2) as [string, string | undefined];
		if (name === "--route" && value) options.route = value;
		else if (name === "--requests" && value && Number(value) > 0) options.requests = Number(value);
		else if (!arg.startsWith("--") && /^[a-z]+\/[a-z-]+$/.test(arg)) options.servers.push(arg);
		else throw new Error(`unknown argument ${arg}: give --route=/path, --requests=N and servers as <framework>/<library>`);
	}
	if (options.servers.length === 0) throw new Error("name at least one server, e.g. node/none node/sessionkit");
	for (const server of options.servers) {
		if (!existsSync(join(ROOT, "bench/servers", `${server}.mjs`))) throw new Error(`no server bench/servers/${server}.mjs`);
	}
	return options;
}

function build(): void {
	rmSync(DIST, { recursive: true, force: true });
	const tsc = join(ROOT, "node_modules/typescript/bin/tsc");
	const result = spawnSync(process.execPath, [tsc, "-p", "tsconfig.build.json", "--outDir", DIST, "--declaration", "false"], { cwd: ROOT, encoding: "utf8" });
	if (!existsSync(join(DIST, "index.js"))) throw new Error(`tsc emitted no index.js:\n${result.stdout}${result.stderr}`);
}

/** Sends `count` GETs, `inFlight` at a time over keep-alive connections; resolves when all are answered. */
function load(port: number, route: string, cookie: string | null, count: number, inFlight = 10): Promise<void> {
	const agent = new Agent({ keepAlive: true, maxSockets: inFlight });
	let sent = 0;
	let answered = 0;
	return new Promise((resolve, reject) => {
		const next = (): void => {
			if (sent === count) return;
			sent++;
			get({ host: "127.0.0.1", port, path: route, agent, headers: cookie ? { cookie } : {} }, (res) => {
				if (res.statusCode !== 200) reject(new Error(`GET ${route} answered ${res.statusCode}`));
				res.resume();
				res.on("end", () => {
					if (++answered === count) {
						agent.destroy();
						resolve();
					} else next();
				});
			}).on("error", reject);
		};
		for (let i = 0; i < Math.min(inFlight, count); i++) next();
	});
}

function login(port: number): Promise<string | null> {
	return new Promise((resolve, reject) => {
		get({ host: "127.0.0.1", port, path: "/login" }, (res) => {
			res.resume();
			const setCookie = res.headers["set-cookie"]?.[0];
			resolve(setCookie ? setCookie.split(";")[0]! : null);
		}).on("error", reject);
	});
}

function callgrindControl(pid: number, flag: "-z" | "-d"): void {
	const result = spawnSync("callgrind_control", [flag, String(pid)], { encoding: "utf8" });
	if (result.status !== 0) throw new Error(`callgrind_control ${flag} failed: ${result.stderr}`);
}

/** The server's instructions per request on `route`. */
async function count(server: string, options: Options): Promise<number> {
	const out = join(tmpdir(), `sessionkit-callgrind-${process.pid}-${server.replace("/", "-")}`);
	const child = spawn("valgrind", ["--tool=callgrind", `--callgrind-out-file=${out}`, process.execPath, "--predictable", join(ROOT, "bench/servers", `${server}.mjs`)], {
		env: { ...process.env, SESSIONKIT_DIST: DIST },
		stdio: ["pipe", "pipe", "ignore"],
	});
	try {
		const port = await new Promise<number>((resolve, reject) => {
			createInterface({ input: child.stdout! }).on("line", (line) => {
				if (line.startsWith("READY ")) resolve((JSON.parse(line.slice(6)) as { port: number }).port);
				if (line.startsWith("SKIP ")) reject(new Error(`${server}: ${line.slice(5)}`));
			});
			child.on("exit", (code) => reject(new Error(`${server} exited (${code}) before it was ready`)));
		});
		const cookie = options.route === "/create" ? null : await login(port);
		await load(port, options.route, cookie, WARM_UP);
		callgrindControl(child.pid!, "-z");
		await load(port, options.route, cookie, options.requests);
		callgrindControl(child.pid!, "-d");
		const dumps = readFileSync(`${out}.1`, "utf8");
		const total = /^(?:summary|totals): (\d+)/m.exec(dumps);
		if (!total) throw new Error(`no totals in callgrind's dump of ${server}`);
		return Number(total[1]) / options.requests;
	} finally {
		child.kill("SIGKILL");
		for (const suffix of ["", ".1"]) rmSync(`${out}${suffix}`, { force: true });
	}
}

async function main(): Promise<void> {
	const options = parseArgs(process.argv.slice(2));
	for (const command of ["valgrind", "callgrind_control"]) {
		if (!commandExists(command)) throw new Error(`${command} is not installed (apt-get install -y valgrind)`);
	}
	build();
	console.log(`route ${options.route}, ${options.requests} requests counted after ${WARM_UP} of warm-up, store ${process.env.BENCH_STORE ?? "memory"}`);
	let base: number | null = null;
	for (const server of options.servers) {
		const perRequest = await count(server, options);
		base ??= perRequest;
		console.log(`${server.padEnd(28)} ${Math.round(perRequest).toLocaleString("en").padStart(9)} instructions/request  ×first ${(base / perRequest).toFixed(3)}`);
	}
}

main().catch((error: unknown) => {
	console.error(error instanceof Error ? error.message : error);
	process.exit(1);
});
