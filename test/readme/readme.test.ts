/**
 * README.md's code, kept true. The ```ts blocks of "Quick start" are read from README.md at test
 * time: for each framework, the shared prelude + that framework's snippet + the little glue the
 * snippet leaves implicit (creating `app` with the real framework, listening on 127.0.0.1 port 0)
 * make one module, which is typechecked with the repo's TypeScript and run as a child process
 * (the real framework server) that must count visits over HTTP. The store snippet of "Stores" is
 * split into one module per store and typechecked only, as is the one that runs the conformance
 * suite on a store of the reader's. Every substitution in README's text is
 * exact and asserted, so an edited snippet fails here instead of silently running something else.
 *
 * The modules are written under test/readme/.tmp/ (ignored by git, and by the repo's tsconfig:
 * its `include` globs skip dot-folders) so that "sessionkit/..." resolves to this package by
 * self-reference, with the `sessionkit-source` condition, as in the other tests.
 */
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { setCookiesOf } from "../helpers/cookie-jar.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const README = join(ROOT, "README.md");
const TMP_PARENT = fileURLToPath(new URL("./.tmp/", import.meta.url));
const TSC = join(ROOT, "node_modules", ".bin", "tsc");
/** What the glue prints on stdout once the server listens, followed by the port. */
const LISTENING = "README-SERVER-LISTENING";

// ---------------------------------------------------------------------------------------------
// Reading README.md

interface Block {
	code: string;
	/** README.md line of the block's first code line (1-based). */
	line: number;
	/** The bold words that start the last paragraph before the block (`**Express**` → "Express"). */
	label: string | undefined;
}

/** The ```ts blocks between `## heading` and the next `## ` heading. */
function tsBlocksOf(markdown: string, heading: string): Block[] {
	const lines = markdown.split("\n");
	const start = lines.indexOf(`## ${heading}`);
	assert.ok(start >= 0, `README.md has a "## ${heading}" section`);
	const blocks: Block[] = [];
	let label: string | undefined;
	for (let i = start + 1; i < lines.length && !lines[i]!.startsWith("## "); i++) {
		const fence = /^```(\S*)\s*$/.exec(lines[i]!);
		if (!fence) {
			const bold = /^\*\*([^*]+)\*\*/.exec(lines[i]!);
			if (bold) label = bold[1];
			continue;
		}
		const first = i + 1;
		do i++;
		while (i < lines.length && !/^```\s*$/.test(lines[i]!));
		assert.ok(i < lines.length, `README.md line ${first}: a code block is never closed`);
		if (fence[1] === "ts") blocks.push({ code: lines.slice(first, i).join("\n"), line: first + 1, label });
		label = undefined;
	}
	return blocks;
}

/** Splits a block where a group of `import` lines starts again after other code. */
function importGroups(block: Block): Block[] {
	const lines = block.code.split("\n");
	const groups: Block[] = [];
	let current: string[] = [];
	let currentStart = 0;
	lines.forEach((text, index) => {
		const isImport = text.startsWith("import ");
		const previous = lines[index - 1];
		if (isImport && index > 0 && previous !== undefined && !previous.startsWith("import ")) {
			groups.push({ code: current.join("\n").trimEnd(), line: block.line + currentStart, label: block.label });
			current = [];
			currentStart = index;
		}
		current.push(text);
	});
	groups.push({ code: current.join("\n").trimEnd(), line: block.line + currentStart, label: block.label });
	return groups;
}

/** `code` with the only occurrence of `from` replaced; fails if there is not exactly one. */
function replaceOnce(code: string, from: string, to: string, where: string): string {
	const parts = code.split(from);
	assert.equal(parts.length - 1, 1, `${where}: expected exactly one ${JSON.stringify(from)} to substitute, found ${parts.length - 1}:\n${code}`);
	return parts.join(to);
}

/** A README block inside a generated module, marked with where it comes from. */
const fromReadme = (block: Block, code = block.code) => `// ---- README.md line ${block.line}${block.label ? ` (${block.label})` : ""} ----\n${code}\n// ---- end of README.md block ----`;

// ---------------------------------------------------------------------------------------------
// The glue each Quick start snippet leaves implicit

interface Framework {
	/** The bold label before the snippet in README.md. */
	label: string;
	/** The file name of the generated module. */
	file: string;
	/** The adapter subpath the snippet must import. */
	adapter: string;
	/** Glue imports (above the prelude). */
	imports: string;
	/** Creates `app` (between the prelude and the snippet). */
	app: string;
	/** Listens on 127.0.0.1 port 0 (after the snippet). */
	listen: string;
	/** Exact substitutions in the snippet: [README text, replacement]. */
	substitutions: Array<[string, string]>;
}

const ANNOUNCE = `import type { AddressInfo } from "node:net";
function readmeListening(address: AddressInfo | string | null): void {
	if (address === null || typeof address === "string") throw new Error(\`not listening on TCP: \${address}\`);
	console.log(\`${LISTENING} \${address.port}\`);
}`;

const FRAMEWORKS: Framework[] = [
	{
		label: "Express",
		file: "express.ts",
		adapter: "sessionkit/express",
		imports: `import express from "express";`,
		app: "const app = express();",
		listen: `const server = app.listen(0, "127.0.0.1", () => readmeListening(server.address()));`,
		substitutions: [],
	},
	{
		label: "Fastify",
		file: "fastify.ts",
		adapter: "sessionkit/fastify",
		imports: `import Fastify from "fastify";`,
		app: "const app = Fastify();",
		listen: `await app.listen({ host: "127.0.0.1", port: 0 });\nreadmeListening(app.server.address());`,
		substitutions: [],
	},
	{
		label: "Koa",
		file: "koa.ts",
		adapter: "sessionkit/koa",
		imports: `import Koa from "koa";`,
		app: "const app = new Koa();",
		listen: `const server = app.listen(0, "127.0.0.1", () => readmeListening(server.address()));`,
		substitutions: [],
	},
	{
		label: "Hono",
		file: "hono.ts",
		adapter: "sessionkit/hono",
		imports: `import { serve } from "@hono/node-server";\nimport { Hono } from "hono";`,
		app: "const app = new Hono();",
		listen: `serve({ fetch: app.fetch, hostname: "127.0.0.1", port: 0 }, (info) => readmeListening(info));`,
		substitutions: [],
	},
	{
		label: "node:http",
		file: "node.ts",
		adapter: "sessionkit/node",
		imports: `import http from "node:http";`,
		app: "",
		listen: "",
		// The snippet listens itself: on port 0 and 127.0.0.1 instead of 3000, and says where.
		substitutions: [[".listen(3000);", `.listen(0, "127.0.0.1", function (this: http.Server) { readmeListening(this.address()); });`]],
	},
];

const STORES = ["postgres", "redis", "cookie"] as const;

interface Module {
	file: string;
	path: string;
	source: string;
}

interface Modules {
	quickStart: Map<string, Module>;
	stores: Map<string, Module>;
	/** "Writing your own store": the conformance suite run on a store of the reader's. */
	customStore: Module;
}

/** Reads README.md and writes every module, and a tsconfig.json for them, into `dir`. */
function assembleModules(dir: string): Modules {
	const markdown = readFileSync(README, "utf8");
	const write = (file: string, source: string): Module => {
		const path = join(dir, file);
		writeFileSync(path, source);
		return { file, path, source };
	};

	// Quick start: a prelude without a label, then one labelled snippet per framework.
	const [prelude, ...snippets] = tsBlocksOf(markdown, "Quick start");
	assert.ok(prelude, "Quick start has ts blocks");
	assert.equal(prelude.label, undefined, `the first Quick start block (README.md line ${prelude.line}) is the shared prelude`);
	assert.match(prelude.code, /declare module "sessionkit"/, "the prelude augments SessionData");
	assert.deepEqual(
		snippets.map((s) => s.label),
		FRAMEWORKS.map((f) => f.label),
		"Quick start has one ts snippet per framework, in this order",
	);

	const quickStart = new Map<string, Module>();
	for (const framework of FRAMEWORKS) {
		const snippet = snippets.find((s) => s.label === framework.label)!;
		const where = `README.md line ${snippet.line} (${framework.label})`;
		assert.match(snippet.code, new RegExp(`from "${framework.adapter}";`), `${where} imports ${framework.adapter}`);
		const db = join(dir, `${basename(framework.file, ".ts")}.db`);
		const preludeCode = replaceOnce(prelude.code, `sqliteStore({ path: "sessions.db" })`, `sqliteStore({ path: ${JSON.stringify(db)} })`, `README.md line ${prelude.line} (prelude)`);
		let snippetCode = snippet.code;
		for (const [from, to] of framework.substitutions) snippetCode = replaceOnce(snippetCode, from, to, where);
		const source = [
			`// Generated by test/readme/readme.test.ts from README.md's Quick start (${framework.label}).`,
			framework.imports,
			ANNOUNCE,
			fromReadme(prelude, preludeCode),
			framework.app,
			fromReadme(snippet, snippetCode),
			framework.listen,
			"",
		].join("\n");
		quickStart.set(framework.label, write(framework.file, source));
	}

	// Stores: the block that declares `store` once per built-in store; one module per import group.
	const storeBlocks = tsBlocksOf(markdown, "Stores").filter((block) => /from "sessionkit\/stores\//.test(block.code));
	assert.equal(storeBlocks.length, 1, "the Stores section has one ts block that imports built-in stores");
	const groups = importGroups(storeBlocks[0]!);
	const stores = new Map<string, Module>();
	for (const group of groups) {
		const imported = [...group.code.matchAll(/from "sessionkit\/stores\/([a-z]+)"/g)].map((m) => m[1]!);
		assert.equal(imported.length, 1, `README.md line ${group.line}: a store group imports one sessionkit store:\n${group.code}`);
		const name = imported[0]!;
		assert.match(group.code, /^const store = /m, `README.md line ${group.line}: the ${name} group declares \`store\``);
		const source = [
			`// Generated by test/readme/readme.test.ts from README.md's Stores section (${name}).`,
			fromReadme(group),
			// What the store is for: it must be accepted by createSessions.
			`import { createSessions } from "sessionkit";`,
			"export const sessions = createSessions({ store });",
			"",
		].join("\n");
		stores.set(name, write(`store-${name}.ts`, source));
	}
	assert.deepEqual([...stores.keys()], [...STORES], "the Stores snippet shows these stores, in this order");

	// Writing your own store: `myStore` is the reader's; declared here with the contract's type.
	const customBlocks = tsBlocksOf(markdown, "Stores").filter((block) => /from "sessionkit\/testing"/.test(block.code));
	assert.equal(customBlocks.length, 1, "the Stores section has one ts block that runs sessionkit/testing");
	assert.match(customBlocks[0]!.code, /\bmyStore\(/, "the custom store snippet builds the reader's store with myStore()");
	const customStore = write(
		"custom-store.ts",
		[
			"// Generated by test/readme/readme.test.ts from README.md's Stores section (writing your own store).",
			`import type { SessionStore } from "sessionkit";`,
			"declare function myStore(url: string): SessionStore;",
			fromReadme(customBlocks[0]!),
			"",
		].join("\n"),
	);

	// `include: []`: the repo's `include` (src, test, ...) would be inherited otherwise.
	writeFileSync(
		join(dir, "tsconfig.json"),
		JSON.stringify({ extends: join(ROOT, "tsconfig.json"), compilerOptions: { noEmit: true }, include: [], files: [...quickStart.values(), ...stores.values(), customStore].map((m) => m.file) }),
	);
	return { quickStart, stores, customStore };
}

// ---------------------------------------------------------------------------------------------
// Typechecking (one tsc run for every module) and running

interface TscResult {
	code: number | null;
	output: string;
}

function runTsc(dir: string): Promise<TscResult> {
	return new Promise((resolve) => {
		execFile(TSC, ["-p", join(dir, "tsconfig.json"), "--pretty", "false"], { cwd: dir, timeout: 60_000 }, (error, stdout, stderr) => {
			const code = error ? (typeof error.code === "number" ? error.code : null) : 0;
			resolve({ code, output: `${stdout}${stderr}`.trim() });
		});
	});
}

/** Fails with tsc's errors for `modules`, each module's source shown with line numbers. */
function assertTypechecks(result: TscResult, modules: Module[], all: Module[]): void {
	const errors = result.output.split("\n").filter((line) => modules.some((m) => line.startsWith(`${m.file}(`)));
	const failing = modules.filter((m) => errors.some((line) => line.startsWith(`${m.file}(`)));
	const numbered = (m: Module) => m.source.split("\n").map((text, i) => `${String(i + 1).padStart(3)} | ${text}`).join("\n");
	assert.deepEqual(errors, [], `tsc errors in the modules built from README.md:\n${errors.join("\n")}\n\n${failing.map((m) => `${m.file}:\n${numbered(m)}`).join("\n\n")}`);
	// An error that names none of the modules (a config problem) fails every check.
	const ours = result.output.split("\n").filter((line) => all.some((m) => line.startsWith(`${m.file}(`)));
	if (ours.length === 0) assert.equal(result.code, 0, `tsc failed:\n${result.output}`);
}

interface Child {
	url: string;
	stop(): Promise<void>;
}

/** Runs `path` as the tests' other child servers run (tsx, source condition) and waits for its port. */
function startModule(path: string): Promise<Child> {
	const child = spawn(process.execPath, ["--conditions=sessionkit-source", "--import", "tsx", path], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
	const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
	const stop = async () => {
		if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
		await exited;
	};
	let stdout = "";
	let stderr = "";
	child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
	return new Promise<Child>((resolve, reject) => {
		const fail = (why: string) => {
			clearTimeout(timer);
			void stop().then(() => reject(new Error(`${basename(path)} ${why}\nstdout:\n${stdout}\nstderr:\n${stderr}`)));
		};
		const timer = setTimeout(() => fail("did not listen within 15 s"), 15_000);
		const early = (code: number | null, signal: NodeJS.Signals | null) => fail(`exited (${signal ?? code}) before listening`);
		child.once("exit", early);
		child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
			stdout += chunk;
			const port = new RegExp(`^${LISTENING} (\\d+)$`, "m").exec(stdout)?.[1];
			if (port === undefined) return;
			clearTimeout(timer);
			child.removeListener("exit", early);
			resolve({ url: `http://127.0.0.1:${port}`, stop });
		});
	});
}

async function get(url: string, cookie?: string): Promise<{ status: number; body: string; sid: string | undefined }> {
	const response = await fetch(url, { headers: cookie === undefined ? {} : { cookie }, redirect: "manual" });
	const body = await response.text();
	return { status: response.status, body, sid: setCookiesOf(response).find((c) => c.name === "sid")?.value };
}

// ---------------------------------------------------------------------------------------------

describe("README.md code", { concurrency: true }, () => {
	let dir: string | undefined;
	let modules: Modules;
	let tsc: Promise<TscResult> | undefined;

	before(() => {
		mkdirSync(TMP_PARENT, { recursive: true });
		dir = mkdtempSync(join(TMP_PARENT, "run-"));
		modules = assembleModules(dir);
		tsc = runTsc(dir);
	});
	after(async () => {
		await tsc;
		if (dir) rmSync(dir, { recursive: true, force: true });
		try {
			rmdirSync(TMP_PARENT); // only if no other run is using it
		} catch {}
	});

	const all = () => [...modules.quickStart.values(), ...modules.stores.values(), modules.customStore];

	it("the Quick start modules (prelude + each framework's snippet) typecheck", async () => {
		assertTypechecks(await tsc!, [...modules.quickStart.values()], all());
	});

	it("the Stores snippet typechecks, one module per store", async () => {
		assertTypechecks(await tsc!, [...modules.stores.values()], all());
	});

	it("the snippet that runs the conformance suite on your own store typechecks", async () => {
		assertTypechecks(await tsc!, [modules.customStore], all());
	});

	for (const framework of FRAMEWORKS) {
		it(`Quick start, ${framework.label}: GET / answers visits: 1 with a cookie, then visits: 2 with it`, async (t) => {
			const server = await startModule(modules.quickStart.get(framework.label)!.path);
			t.after(() => server.stop());

			const first = await get(`${server.url}/`);
			assert.equal(first.status, 200);
			assert.equal(first.body, "visits: 1");
			assert.ok(first.sid, "the first response sets the session cookie");

			const second = await get(`${server.url}/`, `sid=${first.sid}`);
			assert.equal(second.status, 200);
			assert.equal(second.body, "visits: 2", "the cookie brings the session back");

			const stranger = await get(`${server.url}/`);
			assert.equal(stranger.body, "visits: 1", "no cookie, a new session");
		});
	}
});
