/**
 * The package as users install it: every subpath of `exports` imports by the package name and
 * exposes its documented API, importing one loads no database driver or framework, the root's
 * public names are exactly the listed ones, and the build emits JavaScript and declarations for
 * every subpath.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);
const root = fileURLToPath(new URL("../../", import.meta.url));
const probe = fileURLToPath(new URL("./import-probe.ts", import.meta.url));

interface ExportEntry {
	"sessionkit-source": string;
	types: string;
	default: string;
}

const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
	name: string;
	exports: Record<string, ExportEntry | string>;
	dependencies: Record<string, string>;
};

const subpaths = Object.keys(pkg.exports).filter((subpath) => subpath !== "./package.json");
const specifierOf = (subpath: string) => (subpath === "." ? pkg.name : `${pkg.name}/${subpath.slice(2)}`);
const entryOf = (subpath: string) => pkg.exports[subpath] as ExportEntry;

/**
 * The runtime API of every subpath, sorted, and the function a user starts from (as the
 * README documents it). An accidental export, a removed one, or a new subpath without an
 * entry here fails the tests: update the list on purpose.
 */
const PUBLIC_API: Record<string, { entry: string; names: string[] }> = {
	".": {
		entry: "createSessions",
		names: [
			"SESSION_RESPONSE_HEADERS",
			"Session",
			"SessionCodecError",
			"SessionConfigError",
			"SessionError",
			"SessionNotLoadedError",
			"SessionStoreError",
			"SessionTooLargeError",
			"SessionUsageError",
			"applyChanges",
			"createSessions",
			"defaultCodec",
			"generateToken",
			"hashToken",
			"isSealedCookieStore",
			"isWellFormedKey",
			"isWellFormedToken",
		],
	},
	"./stores/memory": { entry: "memoryStore", names: ["memoryStore"] },
	"./stores/file": { entry: "fileStore", names: ["fileStore"] },
	"./stores/sqlite": { entry: "sqliteStore", names: ["sqliteSchema", "sqliteStore"] },
	"./stores/postgres": { entry: "postgresStore", names: ["postgresSchema", "postgresStore"] },
	"./stores/mysql": { entry: "mysqlStore", names: ["mysqlSchema", "mysqlStore"] },
	"./stores/redis": { entry: "redisStore", names: ["redisStore"] },
	"./stores/memcached": { entry: "memcachedStore", names: ["memcachedStore"] },
	"./stores/mongodb": { entry: "mongodbStore", names: ["decodeFieldName", "encodeFieldName", "mongodbStore"] },
	"./stores/cookie": { entry: "cookieStore", names: ["cookieStore"] },
	"./node": { entry: "withSessions", names: ["applyCommit", "beforeHeaders", "getSession", "isSecureRequest", "withSessions"] },
	"./express": { entry: "sessionMiddleware", names: ["getSession", "sessionMiddleware"] },
	"./fastify": { entry: "sessionPlugin", names: ["getSession", "hijackReply", "sessionPlugin"] },
	"./koa": { entry: "sessionMiddleware", names: ["getSession", "sessionMiddleware"] },
	"./hono": { entry: "sessionMiddleware", names: ["getSession", "sessionMiddleware"] },
	"./testing": { entry: "storeConformance", names: ["makeRecord", "noChanges", "sampleValues", "storeConformance"] },
};

/** Optional peer dependencies: database drivers and frameworks, loaded only when the app uses them. */
const DRIVERS = ["pg", "pg-pool", "mysql2", "ioredis", "memjs", "mongodb", "better-sqlite3", "bindings", "express", "fastify", "koa", "hono", "@hono/node-server"];

/** What a child process started with `--import tsx` loads before the probe runs. */
const TOOLING = ["tsx", "esbuild"];

interface ProbeResult {
	exported: string[];
	packages: string[];
	resolvedCount: number;
}

async function probeImport(specifier: string): Promise<ProbeResult> {
	const { stdout } = await run(process.execPath, ["--conditions=sessionkit-source", "--import", "tsx", probe, specifier], { cwd: root, timeout: 60_000 });
	return JSON.parse(stdout) as ProbeResult;
}

describe("package exports", () => {
	it("lists exactly the subpaths the public API describes", () => {
		assert.deepEqual([...subpaths].sort(), Object.keys(PUBLIC_API).sort());
		for (const subpath of subpaths) {
			const entry = entryOf(subpath);
			assert.deepEqual(Object.keys(entry), ["sessionkit-source", "types", "default"], `${subpath}: the source condition first, then types, then default`);
			assert.ok(existsSync(join(root, entry["sessionkit-source"])), `${subpath}: ${entry["sessionkit-source"]} exists`);
		}
	});

	for (const subpath of subpaths) {
		const specifier = specifierOf(subpath);
		it(`${specifier} imports by the package name and exposes ${PUBLIC_API[subpath]?.entry ?? "its API"}`, async () => {
			const expected = PUBLIC_API[subpath];
			assert.ok(expected, `no PUBLIC_API entry for ${subpath}`);
			const module = (await import(specifier)) as Record<string, unknown>;
			assert.deepEqual(Object.keys(module).sort(), expected.names);
			assert.equal(typeof module[expected.entry], "function");
		});
	}

	it("the root exports only the listed names, and each is what it says", async () => {
		const api = (await import("sessionkit")) as Record<string, unknown>;
		assert.deepEqual(Object.keys(api).sort(), PUBLIC_API["."]!.names);
		for (const name of Object.keys(api)) {
			if (name.endsWith("Error")) {
				assert.equal(typeof api[name], "function", name);
				assert.ok((api[name] as { prototype: unknown }).prototype instanceof Error, `${name} is an Error class`);
			}
		}
		assert.deepEqual(api.SESSION_RESPONSE_HEADERS, { "Cache-Control": "no-store", Vary: "Cookie" });
		assert.ok(Object.isFrozen(api.SESSION_RESPONSE_HEADERS), "the shared headers cannot be changed by an app");
	});
});

describe("import-time cost", () => {
	it("the probe sees a driver when one is loaded, by ESM or CommonJS", async () => {
		const [esm, cjs] = await Promise.all([probeImport("pg"), probeImport("ioredis")]);
		assert.ok(esm.packages.includes("pg"), `pg seen: ${esm.packages.join(", ")}`);
		assert.ok(cjs.packages.includes("ioredis"), `ioredis seen: ${cjs.packages.join(", ")}`);
		assert.ok(esm.resolvedCount > 0, "the resolve hook ran");
	});

	it("importing any subpath loads no driver, no framework, nothing but the package's own dependencies", async () => {
		const allowed = new Set([...Object.keys(pkg.dependencies), ...TOOLING]);
		const results = await Promise.all(subpaths.map(async (subpath) => [subpath, await probeImport(specifierOf(subpath))] as const));
		for (const [subpath, result] of results) {
			const specifier = specifierOf(subpath);
			assert.deepEqual(result.exported, PUBLIC_API[subpath]!.names, `${specifier} imported in the child`);
			assert.ok(result.resolvedCount > 0, `${specifier}: the resolve hook ran`);
			const drivers = result.packages.filter((name) => DRIVERS.includes(name));
			assert.deepEqual(drivers, [], `${specifier} loaded a driver at import time`);
			const unexpected = result.packages.filter((name) => !allowed.has(name));
			assert.deepEqual(unexpected, [], `${specifier} loaded packages that are not dependencies`);
		}
	});
});

describe("npm pack", () => {
	it("ships the build (prepack makes it), the sources its maps name, README, LICENSE and docs; no tests, benchmarks or examples", { timeout: 120_000 }, async () => {
		const npm = process.platform === "win32" ? "npm.cmd" : "npm";
		rmSync(join(root, "dist"), { recursive: true, force: true }); // what a fresh clone has: prepack must build it
		const { stdout } = await run(npm, ["pack", "--dry-run", "--json"], { cwd: root, timeout: 110_000 });
		const [packed] = JSON.parse(stdout) as Array<{ files: Array<{ path: string }> }>;
		const files = new Set(packed!.files.map((file) => file.path));
		for (const subpath of subpaths) {
			const entry = entryOf(subpath);
			for (const path of [entry.types, entry.default, entry["sessionkit-source"]]) assert.ok(files.has(path.slice(2)), `${subpath}: ${path} is in the package`);
		}
		for (const path of ["package.json", "README.md", "LICENSE", "docs/stores/redis.md"]) assert.ok(files.has(path), `${path} is in the package`);
		const stray = [...files].filter((path) => /^(test|bench|examples|node_modules|data)\//.test(path) || path.endsWith(".tsbuildinfo"));
		assert.deepEqual(stray, []);
	});
});

describe("build", () => {
	it("tsc -p tsconfig.build.json emits JavaScript and declarations for every subpath, and the JavaScript runs on plain Node", { timeout: 120_000 }, async (t) => {
		const outDir = mkdtempSync(join(tmpdir(), "sessionkit-build-"));
		t.after(() => rmSync(outDir, { recursive: true, force: true }));
		const tsc = join(root, "node_modules", ".bin", "tsc");
		await run(tsc, ["-p", "tsconfig.build.json", "--outDir", outDir], { cwd: root, timeout: 110_000 });

		for (const subpath of subpaths) {
			const entry = entryOf(subpath);
			const types = resolve(outDir, entry.types.replace(/^\.\/dist\//, ""));
			const code = resolve(outDir, entry.default.replace(/^\.\/dist\//, ""));
			assert.ok(existsSync(types), `${subpath}: ${entry.types} is emitted`);
			assert.ok(existsSync(code), `${subpath}: ${entry.default} is emitted`);
			const declared = readFileSync(types, "utf8");
			for (const name of PUBLIC_API[subpath]!.names) {
				assert.match(declared, new RegExp(`\\b${name}\\b`), `${entry.types} declares ${name}`);
			}
		}
		assert.ok(!existsSync(join(outDir, "test")), "only src/ is built");

		// The emitted ESM must run without tsx or the source condition: relative imports with .js.
		symlinkSync(join(root, "node_modules"), join(outDir, "node_modules"), "dir");
		const check = `
			const url = process.argv[1];
			const api = await import(url + "/index.js");
			const { memoryStore } = await import(url + "/stores/memory.js");
			const { withSessions } = await import(url + "/adapters/node.js");
			const sessions = api.createSessions({ store: memoryStore({ sweepInterval: 0 }) });
			const session = await sessions.load(undefined);
			session.set("a", 1);
			const { setCookie } = await sessions.commit(session, { secure: false });
			if (!/^sid=[A-Za-z0-9_-]{43}; Path=\\/; HttpOnly; SameSite=Lax$/.test(setCookie)) throw new Error(setCookie);
			if (typeof withSessions !== "function") throw new Error("withSessions");
			await sessions.close();
			process.stdout.write("ok");`;
		const { stdout } = await run(process.execPath, ["--input-type=module", "-e", check, pathToFileURL(outDir).href], { cwd: outDir, timeout: 30_000 });
		assert.equal(stdout, "ok");
	});
});
