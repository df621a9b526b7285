/**
 * Load generation against 127.0.0.1 only: wrk (preferred) or autocannon, in their own process
 * pinned to core 1, for a fixed duration; plus small driver-side requests (login, read-back,
 * warm-up bursts, sequential probes) over a keep-alive agent.
 */
import http from "node:http";
import { fileURLToPath } from "node:url";
import { commandExists, pinned, runToEnd } from "./proc.js";

export type Tool = "wrk" | "autocannon";
export const tool: Tool = commandExists("wrk") ? "wrk" : "autocannon";

const WRK_SCRIPT = fileURLToPath(new URL("../wrk-report.lua", import.meta.url));
const AUTOCANNON_RUNNER = fileURLToPath(new URL("./autocannon-runner.mjs", import.meta.url));

export interface LoadResult {
	requests: number;
	durationS: number;
	reqPerSec: number;
	p50Ms: number;
	p99Ms: number;
	/** Socket errors, timeouts and non-2xx/3xx responses. */
	errors: number;
}

function checkLocal(url: string): void {
	const host = new URL(url).hostname;
	if (host !== "127.0.0.1") throw new Error(`refusing to load ${host}: the bench targets 127.0.0.1 only`);
}

/** Loads `url` for `seconds` (a whole number) with `connections` keep-alive connections. */
export async function load(url: string, options: { seconds: number; connections: number; cookie: string | null }): Promise<LoadResult> {
	checkLocal(url);
	const seconds = Math.max(1, Math.round(options.seconds));
	const timeoutMs = seconds * 1000 + 15_000;
	if (tool === "wrk") {
		const args = ["-t1", `-c${options.connections}`, `-d${seconds}s`, "--timeout", "5s", "-s", WRK_SCRIPT];
		if (options.cookie) args.push("-H", `Cookie: ${options.cookie}`);
		args.push(url);
		const [command, argv] = pinned(1, "wrk", args);
		const run = await runToEnd(command, argv, { timeoutMs });
		const line = run.stdout.split("\n").find((l) => l.startsWith("WRK_JSON "));
		if (!line) throw new Error(`wrk gave no result (exit ${run.code}): ${run.stderr || run.stdout}`);
		const r = JSON.parse(line.slice("WRK_JSON ".length)) as Record<string, number>;
		const durationS = r.duration_us! / 1e6;
		return {
			requests: r.requests!,
			durationS,
			reqPerSec: r.requests! / durationS,
			p50Ms: r.p50_us! / 1000,
			p99Ms: r.p99_us! / 1000,
			errors: r.connect! + r.read! + r.write! + r.status! + r.timeout!,
		};
	}
	const spec = JSON.stringify({ url, connections: options.connections, duration: seconds, cookie: options.cookie });
	const [command, argv] = pinned(1, process.execPath, [AUTOCANNON_RUNNER, spec]);
	const run = await runToEnd(command, argv, { timeoutMs });
	const line = run.stdout.split("\n").find((l) => l.startsWith("AC_JSON "));
	if (!line) throw new Error(`autocannon gave no result (exit ${run.code}): ${run.stderr}`);
	return JSON.parse(line.slice("AC_JSON ".length)) as LoadResult;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

export interface Reply {
	status: number;
	body: string;
	setCookies: string[];
}

/** One GET from the driver. */
export function get(url: string, cookie: string | null = null, timeoutMs = 10_000): Promise<Reply> {
	checkLocal(url);
	return new Promise((resolve, reject) => {
		const req = http.get(url, { agent, headers: cookie ? { cookie } : {}, timeout: timeoutMs }, (res) => {
			let body = "";
			res.setEncoding("utf8");
			res.on("data", (chunk: string) => (body += chunk));
			res.on("end", () => {
				const raw = res.headers["set-cookie"];
				resolve({ status: res.statusCode ?? 0, body, setCookies: raw ?? [] });
			});
		});
		req.on("timeout", () => req.destroy(new Error(`GET ${url} timed out`)));
		req.on("error", reject);
	});
}

/** The `Cookie` header a browser would send back after these `Set-Cookie` values. */
export function cookieHeader(setCookies: string[]): string | null {
	const pairs = setCookies.map((c) => c.split(";")[0]!.trim()).filter((pair) => pair.includes("=") && !pair.endsWith("="));
	return pairs.length > 0 ? pairs.join("; ") : null;
}

/**
 * `total` requests, `concurrency` at a time, or fewer if `seconds` run out first: a warm-up that
 * needs no extra process, and takes no longer on a slow server.
 */
export async function burst(url: string, cookie: string | null, total: number, seconds = Number.POSITIVE_INFINITY, concurrency = 16): Promise<void> {
	let next = 0;
	const end = performance.now() + seconds * 1000;
	const worker = async () => {
		while (next < total && performance.now() < end) {
			next++;
			await get(url, cookie);
		}
	};
	await Promise.all(Array.from({ length: concurrency }, worker));
}

export function closeAgent(): void {
	agent.destroy();
}
