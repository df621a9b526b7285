/**
 * `npm run bench -- --profile`: runs sessionkit's Express and node:http servers (memory store)
 * under the counter load with `node --cpu-prof`, then ranks where the CPU went: self and
 * inclusive time per function, sessionkit's own code mapped back to src/*.ts through the
 * compiled source maps. Writes bench/results/profile.md.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { burst, cookieHeader, get, load } from "./load.js";
import { pinned, startProcess } from "./proc.js";

interface CallFrame {
	functionName: string;
	url: string;
	lineNumber: number;
	columnNumber: number;
}
interface ProfileNode {
	id: number;
	callFrame: CallFrame;
	children?: number[];
}
interface CpuProfile {
	nodes: ProfileNode[];
	samples: number[];
	timeDeltas: number[];
}

interface Options {
	root: string;
	bench: string;
	dist: string;
	results: string;
	tmp: string;
	seconds: number;
	connections: number;
	log: (line: string) => void;
}

// ------------------------------------------------------------------ source maps (VLQ)

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/** generated line (0-based) → sorted [generatedColumn, originalLine (0-based)] pairs. */
function decodeMappings(mappings: string): Array<Array<[number, number]>> {
	const lines: Array<Array<[number, number]>> = [];
	let originalLine = 0;
	for (const lineText of mappings.split(";")) {
		const segments: Array<[number, number]> = [];
		let column = 0;
		for (const segment of lineText.split(",")) {
			if (!segment) continue;
			const values: number[] = [];
			let value = 0;
			let shift = 0;
			for (const char of segment) {
				const digit = B64.indexOf(char);
				value += (digit & 31) << shift;
				if (digit & 32) shift += 5;
				else {
					values.push(value & 1 ? -(value >>> 1) : value >>> 1);
					value = 0;
					shift = 0;
				}
			}
			column += values[0] ?? 0;
			if (values.length >= 4) {
				originalLine += values[2]!;
				segments.push([column, originalLine]);
			}
		}
		lines.push(segments);
	}
	return lines;
}

const maps = new Map<string, { source: string; lines: Array<Array<[number, number]>> } | null>();

function originalPosition(file: string, line: number, column: number, root: string): string | null {
	if (!maps.has(file)) {
		try {
			const map = JSON.parse(readFileSync(`${file}.map`, "utf8")) as { sources: string[]; mappings: string };
			const source = relative(root, join(file, "..", map.sources[0]!));
			maps.set(file, { source, lines: decodeMappings(map.mappings) });
		} catch {
			maps.set(file, null);
		}
	}
	const map = maps.get(file);
	if (!map) return null;
	const segments = map.lines[line] ?? [];
	let best: [number, number] | undefined = segments[0];
	for (const segment of segments) if (segment[0] <= column) best = segment;
	return best ? `${map.source}:${best[1] + 1}` : map.source;
}

// ------------------------------------------------------------------ analysis

interface Row {
	name: string;
	where: string;
	group: string;
	selfMs: number;
	totalMs: number;
}

function groupOf(url: string, dist: string): string {
	if (!url) return "(native / VM)";
	if (url.includes(dist)) return "sessionkit";
	const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
	if (nm) return nm[1]!;
	if (url.startsWith("node:")) return "node internals";
	if (url.includes("/bench/servers/")) return "bench server";
	return url;
}

function analyse(profile: CpuProfile, dist: string, root: string): { rows: Row[]; groups: Array<[string, number]>; totalMs: number } {
	const byId = new Map(profile.nodes.map((n) => [n.id, n]));
	const self = new Map<number, number>();
	for (let i = 0; i < profile.samples.length; i++) {
		const id = profile.samples[i]!;
		self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000);
	}
	const keyOf = (node: ProfileNode) => {
		const f = node.callFrame;
		return `${f.functionName || "(anonymous)"}\u0000${f.url}\u0000${f.lineNumber}`;
	};
	const rows = new Map<string, Row>();
	const rowOf = (node: ProfileNode): Row => {
		const key = keyOf(node);
		let row = rows.get(key);
		if (!row) {
			const f = node.callFrame;
			const file = f.url.startsWith("file://") ? new URL(f.url).pathname : f.url;
			const where = f.url.includes(dist) ? (originalPosition(file, f.lineNumber, f.columnNumber, root) ?? relative(root, file)) : f.url ? `${f.url.replace(/^file:\/\//, "").replace(`${root}/`, "")}:${f.lineNumber + 1}` : "";
			row = { name: f.functionName || "(anonymous)", where, group: groupOf(f.url, dist), selfMs: 0, totalMs: 0 };
			rows.set(key, row);
		}
		return row;
	};
	const root0 = profile.nodes[0]!;
	// Depth-first, adding each node's self time to every distinct function on its path (inclusive time).
	const stack: Array<{ node: ProfileNode; childIndex: number }> = [{ node: root0, childIndex: 0 }];
	const onPath = new Map<string, number>();
	const enter = (node: ProfileNode) => {
		const key = keyOf(node);
		onPath.set(key, (onPath.get(key) ?? 0) + 1);
		const ms = self.get(node.id) ?? 0;
		rowOf(node).selfMs += ms;
		if (ms) for (const k of onPath.keys()) rows.get(k)!.totalMs += ms;
	};
	enter(root0);
	while (stack.length) {
		const top = stack[stack.length - 1]!;
		const children = top.node.children ?? [];
		if (top.childIndex < children.length) {
			const child = byId.get(children[top.childIndex++]!)!;
			enter(child);
			stack.push({ node: child, childIndex: 0 });
		} else {
			stack.pop();
			const key = keyOf(top.node);
			const count = onPath.get(key)! - 1;
			if (count === 0) onPath.delete(key);
			else onPath.set(key, count);
		}
	}
	const all = [...rows.values()];
	const idle = all.filter((r) => r.name === "(idle)").reduce((s, r) => s + r.selfMs, 0);
	const totalMs = all.reduce((s, r) => s + r.selfMs, 0) - idle;
	const groups = new Map<string, number>();
	for (const r of all) {
		if (r.name === "(idle)" || r.name === "(root)") continue;
		const group = r.name === "(garbage collector)" ? "(garbage collector)" : r.name === "(program)" ? "(program)" : r.group;
		groups.set(group, (groups.get(group) ?? 0) + r.selfMs);
	}
	return { rows: all, groups: [...groups.entries()].sort((a, b) => b[1] - a[1]), totalMs };
}

// ------------------------------------------------------------------ run

export async function profile(options: Options): Promise<void> {
	const { log } = options;
	const out: string[] = ["# sessionkit CPU profile", "", `Generated by \`npm run bench -- --profile\` on ${new Date().toISOString()}: each server (memory store) under wrk load on its counter route for ${options.seconds} s, \`node --cpu-prof --cpu-prof-interval 250\`. Times are sampled CPU ms of the server process; idle excluded.`, ""];
	const targets = [
		{ label: "node:http without sessions (the ceiling), counter", server: "node/none.mjs", path: "/counter" },
		{ label: "Express 5 + sessionkit, memory store, counter", server: "express/sessionkit.mjs", path: "/counter" },
		{ label: "node:http + sessionkit, memory store, counter", server: "node/sessionkit.mjs", path: "/counter" },
		{ label: "Fastify 5 + sessionkit, memory store, counter", server: "fastify/sessionkit.mjs", path: "/counter" },
		{ label: "node:http + sessionkit, memory store, read-only", server: "node/sessionkit.mjs", path: "/read" },
	];
	for (const target of targets) {
		const dir = join(options.tmp, "profile", target.server.replace(/\W+/g, "-") + target.path.replace(/\W+/g, "-"));
		rmSync(dir, { recursive: true, force: true });
		mkdirSync(dir, { recursive: true });
		log(`\n▶ profiling ${target.label}`);
		const [command, args] = pinned(0, process.execPath, ["--cpu-prof", `--cpu-prof-dir=${dir}`, "--cpu-prof-interval", "250", join(options.bench, "servers", target.server)]);
		const server = await startProcess(command, args, {
			cwd: options.root,
			env: { ...process.env, NODE_ENV: "production", BENCH_STORE: "memory", SESSIONKIT_DIST: options.dist },
			ready: (line) => line.startsWith("READY ") || line.startsWith("SKIP "),
			timeoutMs: 20_000,
			graceMs: 10_000,
		});
		try {
			if (server.line.startsWith("SKIP ")) {
				log(`  skip: ${server.line.slice(5)}`);
				continue;
			}
			const { port } = JSON.parse(server.line.slice(6)) as { port: number };
			const base = `http://127.0.0.1:${port}`;
			const cookie = cookieHeader((await get(`${base}/login`)).setCookies);
			await burst(`${base}${target.path}`, cookie, 3000);
			const result = await load(`${base}${target.path}`, { seconds: options.seconds, connections: options.connections, cookie });
			log(`  ${result.reqPerSec.toFixed(0)} req/s under the profiler`);
		} finally {
			await server.stop();
		}
		const file = readdirSync(dir).filter((f) => f.endsWith(".cpuprofile")).map((f) => join(dir, f)).sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0];
		if (!file || !existsSync(file)) {
			log("  no .cpuprofile was written");
			continue;
		}
		const { rows, groups, totalMs } = analyse(JSON.parse(readFileSync(file, "utf8")) as CpuProfile, options.dist, options.root);
		const share = (ms: number) => `${((ms / totalMs) * 100).toFixed(1)}%`;
		const sk = rows.filter((r) => r.group === "sessionkit");
		const skSelf = sk.reduce((s, r) => s + r.selfMs, 0);
		out.push(`## ${target.label}`, "", `Busy CPU sampled: ${totalMs.toFixed(0)} ms. sessionkit's own code (self): ${share(skSelf)}. Profile: \`${relative(options.root, file)}\` (open in Chrome DevTools).`, "");
		out.push("Where the time went (self time by origin):", "", "| origin | self | share |", "| --- | --: | --: |");
		for (const [group, ms] of groups.slice(0, 12)) out.push(`| ${group} | ${ms.toFixed(0)} ms | ${share(ms)} |`);
		out.push("", "sessionkit functions by inclusive time (callees included):", "", "| function | src | inclusive | self |", "| --- | --- | --: | --: |");
		for (const r of [...sk].sort((a, b) => b.totalMs - a.totalMs).slice(0, 15)) out.push(`| \`${r.name}\` | ${r.where} | ${share(r.totalMs)} | ${share(r.selfMs)} |`);
		out.push("", "Top 20 functions by self time, all code:", "", "| function | where | origin | self |", "| --- | --- | --- | --: |");
		for (const r of [...rows].filter((r) => r.name !== "(idle)" && r.name !== "(root)").sort((a, b) => b.selfMs - a.selfMs).slice(0, 20)) out.push(`| \`${r.name}\` | ${r.where} | ${r.group} | ${share(r.selfMs)} |`);
		out.push("");
		log(`  sessionkit self ${share(skSelf)}; top inclusive: ${[...sk].sort((a, b) => b.totalMs - a.totalMs).slice(0, 6).map((r) => `${r.name} ${share(r.totalMs)}`).join(", ")}`);
	}
	writeFileSync(join(options.results, "profile.md"), `${out.join("\n")}\n`);
	log(`\nwrote ${relative(options.root, join(options.results, "profile.md"))}`);
}
