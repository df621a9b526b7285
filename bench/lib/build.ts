/** Compiles `src` with the project's tsc into `outDir`, as users run it; the bench servers import from there. */
import { spawnSync } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))));

/**
 * Returns tsc's error lines (the files it emitted are kept: work in progress elsewhere must not
 * stop a run). Throws when nothing usable was emitted.
 */
export function compileSrc(outDir: string): string[] {
	rmSync(outDir, { recursive: true, force: true });
	const tsc = join(ROOT, "node_modules/typescript/bin/tsc");
	const result = spawnSync(process.execPath, [tsc, "-p", "tsconfig.build.json", "--outDir", outDir, "--declaration", "false", "--sourceMap", "true"], { cwd: ROOT, encoding: "utf8", timeout: 120_000 });
	if (!existsSync(join(outDir, "index.js"))) throw new Error(`the build emitted no ${outDir}/index.js: cannot run sessionkit variants`);
	return result.status === 0 ? [] : `${result.stdout}${result.stderr}`.trim().split("\n");
}
