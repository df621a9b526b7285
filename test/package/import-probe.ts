/**
 * Child-process probe for `exports.test.ts`: imports one module specifier and prints, as JSON on
 * stdout, every package it made Node load. Two independent signals, so neither ESM nor CommonJS
 * loading slips through: a `module.register` resolve hook that sees every ESM resolution
 * (registered after tsx, so it runs first and sees what tsx resolves too), and the CommonJS
 * module cache, which holds every file `require()` loaded.
 *
 * Usage: node --conditions=sessionkit-source --import tsx test/package/import-probe.ts <specifier>
 */
import { createRequire, register } from "node:module";
import { MessageChannel } from "node:worker_threads";

const specifier = process.argv[2];
if (!specifier) throw new Error("usage: import-probe.ts <specifier>");

const hooks = `
let port;
export function initialize(data) { port = data.port; }
export async function resolve(specifier, context, nextResolve) {
	const result = await nextResolve(specifier, context);
	port.postMessage(result.url);
	return result;
}`;

const resolved: string[] = [];
const { port1, port2 } = new MessageChannel();
port1.on("message", (url: string) => resolved.push(url));
register(`data:text/javascript,${encodeURIComponent(hooks)}`, { data: { port: port2 }, transferList: [port2] });

const exported = Object.keys(await import(specifier)).sort();
// Let the hook thread's last messages arrive.
await new Promise((resolve) => setTimeout(resolve, 50));
port1.close();

const files = [...resolved, ...Object.keys(createRequire(import.meta.url).cache)];
const packages = new Set<string>();
for (const file of files) {
	const match = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(file.replaceAll("\\", "/"));
	if (match) packages.add(match[1]!);
}
process.stdout.write(JSON.stringify({ exported, packages: [...packages].sort(), resolvedCount: resolved.length }));
