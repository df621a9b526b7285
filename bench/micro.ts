/**
 * Per-request costs of sessionkit's core, with tinybench, on the compiled src
 * (SESSIONKIT_DIST, built by bench/run.ts): parse the cookie, hash and generate a token, encode
 * and decode a typical record, and whole load+commit rounds through the memory store. The
 * cookie store's seal+unseal is set beside iron-session's.
 *
 *   node --import tsx bench/micro.ts [--quick] [--json=out.json]     (SESSIONKIT_DIST=… required)
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { sealData, unsealData } from "iron-session";
import { Bench } from "tinybench";
import type * as CookieModule from "../src/core/cookie.js";
import type * as Index from "../src/index.js";
import type * as CookieStoreModule from "../src/stores/cookie.js";
import type * as MemoryModule from "../src/stores/memory.js";
import type { MicroResult } from "./lib/types.js";

const dist = process.env.SESSIONKIT_DIST;
if (!dist) {
	console.error("micro.ts: set SESSIONKIT_DIST to the compiled src (npm run bench does)");
	process.exit(2);
}
const load = async <T>(path: string): Promise<T> => (await import(pathToFileURL(join(dist, path)).href)) as T;

const core = await load<typeof Index>("index.js");
const cookie = await load<typeof CookieModule>("core/cookie.js");
const { memoryStore } = await load<typeof MemoryModule>("stores/memory.js");
const cookieStoreModule = await load<typeof CookieStoreModule>("stores/cookie.js").catch(() => null);

const quick = process.argv.includes("--quick");
const jsonOut = process.argv.find((a) => a.startsWith("--json="))?.slice("--json=".length);

const LOGIN: Record<string, unknown> = {
	userId: 4242,
	name: "Ada Lovelace",
	email: "ada@example.com",
	roles: ["admin", "editor"],
	locale: "en-GB",
	csrf: "Zq3x9Vb2LkP0sT8wYc1NfR5hJd7Gm4Ua",
};
const SECRET = "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz";

// A logged-in session in the memory store, and the Cookie header a browser sends with it.
const sessions = core.createSessions({ store: memoryStore({ sweepInterval: 0 }) });
const fresh = await sessions.load(undefined);
for (const [key, value] of Object.entries(LOGIN)) fresh.set(key, value);
fresh.flash("notice", "Welcome back, Ada!");
const { setCookie } = await sessions.commit(fresh, { secure: false });
const token = setCookie!.split(";")[0]!.split("=")[1]!;
const header = `_ga=GA1.2.1234567890.1700000000; theme=dark; sid=${token}; consent=yes`;

const encoded = Object.fromEntries(Object.entries(LOGIN).map(([k, v]) => [k, core.defaultCodec.encode(v)]));
const record = {
	data: encoded,
	flash: { notice: core.defaultCodec.encode("Welcome back, Ada!") },
	createdAt: Date.now(),
	idleExpiresAt: Date.now() + 1_800_000,
	absoluteExpiresAt: Date.now() + 86_400_000,
	subject: "4242",
};

const bench = new Bench({ time: quick ? 150 : 300, warmupTime: quick ? 50 : 100 });
bench
	.add("parse the Cookie header (4 cookies)", () => {
		cookie.readSessionCookie(header, "sid", 64);
	})
	.add("hash a token (SHA-256 → hex)", () => {
		core.hashToken(token);
	})
	.add("generate a token (32 CSPRNG bytes → base64url)", () => {
		core.generateToken();
	})
	.add("codec encode a login session (6 values + flash)", () => {
		for (const key in LOGIN) core.defaultCodec.encode(LOGIN[key]);
		core.defaultCodec.encode("Welcome back, Ada!");
	})
	.add("codec decode a login session (6 values + flash)", () => {
		for (const key in encoded) core.defaultCodec.decode(encoded[key]!);
		core.defaultCodec.decode(record.flash.notice);
	})
	.add("memory store: load + increment + commit", async () => {
		const session = await sessions.load(header);
		session.increment("count");
		await sessions.commit(session, { secure: false });
	})
	.add("memory store: load + read + commit (no write)", async () => {
		const session = await sessions.load(header);
		session.get("count");
		await sessions.commit(session, { secure: false });
	})
	.add("memory store: new session, login + commit", async () => {
		const session = await sessions.load(undefined);
		for (const key in LOGIN) session.set(key, LOGIN[key]);
		await sessions.commit(session, { secure: false });
	});

if (cookieStoreModule) {
	const sealed = cookieStoreModule.cookieStore({ secrets: [SECRET] });
	bench.add("sessionkit cookieStore seal+unseal (login record)", async () => {
		await sealed.unseal(await sealed.seal(record));
	});
}
const ironData = { ...LOGIN, flash: { notice: "Welcome back, Ada!" } };
bench.add("iron-session seal+unseal (same login)", async () => {
	await unsealData(await sealData(ironData, { password: SECRET }), { password: SECRET });
});

await bench.run();

const results: MicroResult[] = [];
for (const task of bench.tasks) {
	const result = task.result;
	if (result.state !== "completed") {
		console.error(`micro: ${task.name}: ${result.state}`);
		continue;
	}
	results.push({ name: task.name, opsPerSec: result.throughput.mean, meanUs: result.latency.mean * 1000, p99Us: result.latency.p99 * 1000 });
}
const width = Math.max(...results.map((r) => r.name.length));
for (const r of results) {
	console.log(`  ${r.name.padEnd(width)}  ${r.opsPerSec.toFixed(0).padStart(9)} ops/s  mean ${r.meanUs.toFixed(2).padStart(7)} µs  p99 ${r.p99Us.toFixed(2).padStart(7)} µs`);
}
if (jsonOut) writeFileSync(jsonOut, JSON.stringify(results, null, "\t"));
await sessions.close();
