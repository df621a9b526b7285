/** Targets, terminal table, Markdown, JSON and the SVG chart of one run. */
import type { Entry, Framework, MicroResult, Report, StoredBytes, Target } from "./types.js";
import { FRAMEWORK_LABEL, SCENARIO_LABEL } from "./types.js";

const FRAMEWORKS: Framework[] = ["node", "express", "fastify", "koa", "hono"];

function find(entries: Entry[], where: Partial<Entry>): Entry | undefined {
	return entries.find((e) => Object.entries(where).every(([k, v]) => e[k as keyof Entry] === v));
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** "13.1k vs 22.2k req/s": the variant's and the ceiling's mean over the paired windows (or best window vs ceiling). */
function versus(e: Entry): string {
	if (e.ceilingWindows?.length) return `${fmtRps(mean(e.windows))} vs ${fmtRps(mean(e.ceilingWindows))} req/s, paired windows`;
	return `${fmtRps(e.reqPerSec)} vs ${fmtRps(e.reqPerSec / e.ratioToCeiling!)} req/s`;
}

/** "4.8k vs 4.0k req/s, interleaved windows": sessionkit's and the peer's mean over the windows ×peer divides. */
function versusPeer(e: Entry): string {
	return e.peerWindows?.length ? `${fmtRps(mean(e.windows))} vs ${fmtRps(mean(e.peerWindows))} req/s, interleaved windows` : "from each one's ×ceiling";
}

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
const times = (x: number) => `${x.toFixed(2)}×`;

/** "; one empty middleware alone: 0.882": the framework's floor on this scenario, where it was measured. */
function floorNote(entries: Entry[], framework: Framework, scenario: Entry["scenario"]): string {
	const floor = find(entries, { framework, kind: "floor", scenario });
	if (floor?.ratioToCeiling == null) return "";
	return `; ${floor.library === "empty middleware" ? "one empty middleware" : `a ${floor.library}`} alone: ${floor.ratioToCeiling.toFixed(3)}`;
}

/**
 * The targets, judged. A quick run does not judge the speed targets: each scenario gets one
 * window after a 0.5-s burst, and a server's first scenario then runs before V8 has optimized
 * it (node:http's untouched route read 0.34 of the ceiling in one quick run, 0.89-1.00 in full
 * runs). Its figures are still shown.
 */
export function evaluateTargets(entries: Entry[], micro: MicroResult[], quick = false): Target[] {
	const targets = speedTargets(entries, micro);
	if (quick) {
		for (const t of targets) {
			if (t.met !== null) t.measured += " · a quick run does not judge it";
			t.met = null;
		}
	}
	return [...targets, ...behaviourTargets(entries)];
}

/** The ratio targets: judged on full runs only. */
function speedTargets(entries: Entry[], micro: MicroResult[]): Target[] {
	const targets: Target[] = [];
	for (const framework of FRAMEWORKS) {
		const goal = framework === "express" ? 0.9 : 0.85;
		const e = find(entries, { framework, store: "memory", scenario: "counter", kind: "sessionkit" });
		targets.push({
			name: `counter, memory store, ${FRAMEWORK_LABEL[framework]}`,
			goal: `≥ ${goal} of no-session`,
			measured: e?.ratioToCeiling != null ? `${e.ratioToCeiling.toFixed(3)} (${versus(e)}${floorNote(entries, framework, "counter")})` : "not measured",
			met: e?.ratioToCeiling != null ? e.ratioToCeiling >= goal : null,
		});
	}
	{
		const counter = find(entries, { framework: "node", store: "cookie", scenario: "counter", kind: "sessionkit" });
		const read = find(entries, { framework: "node", store: "cookie", scenario: "read", kind: "sessionkit" });
		const seal = micro.find((m) => m.name.startsWith("sessionkit cookieStore seal+unseal"));
		const iron = micro.find((m) => m.name.startsWith("iron-session seal+unseal"));
		const microRatio = seal && iron ? ` · seal+unseal per op (micro): ${times(iron.meanUs / seal.meanUs)}` : "";
		targets.push({
			name: "cookie store vs iron-session (node:http, counter)",
			goal: "≥ 20× iron-session",
			measured: counter?.ratioToPeer != null ? `${times(counter.ratioToPeer)} req/s (${versusPeer(counter)}; read-only: ${read?.ratioToPeer != null ? times(read.ratioToPeer) : "—"})${microRatio}` : `not measured${microRatio}`,
			met: counter?.ratioToPeer != null ? counter.ratioToPeer >= 20 : null,
		});
	}
	for (const framework of FRAMEWORKS) {
		const e = find(entries, { framework, store: "redis", scenario: "counter", kind: "sessionkit" });
		if (!e || e.ratioToPeer == null) continue;
		const peer = find(entries, { framework, store: "redis", scenario: "counter", kind: "peer" });
		targets.push({
			name: `Redis vs the peer's Redis store, ${FRAMEWORK_LABEL[framework]} (counter)`,
			goal: "≥ 2× the peer",
			measured: `${times(e.ratioToPeer)} (${versusPeer(e)}; ×ceiling ${fmt(e.ratioToCeiling, 3)} vs the peer's ${fmt(peer?.ratioToCeiling, 3)})`,
			met: e.ratioToPeer >= 2,
		});
	}
	for (const framework of FRAMEWORKS) {
		const e = find(entries, { framework, store: "memory", scenario: "untouched", kind: "sessionkit" });
		targets.push({
			name: `untouched route, memory store, ${FRAMEWORK_LABEL[framework]}`,
			goal: "within 3% of no-session (≥ 0.97)",
			measured: e?.ratioToCeiling != null ? `${e.ratioToCeiling.toFixed(3)} (${versus(e)}${floorNote(entries, framework, "untouched")})` : "not measured",
			met: e?.ratioToCeiling != null ? e.ratioToCeiling >= 0.97 : null,
		});
	}
	return targets;
}

/** Increments kept, writes on reads, round trips to load: counts, which a quick run judges too. */
function behaviourTargets(entries: Entry[]): Target[] {
	const targets: Target[] = [];
	{
		const counters = entries.filter((e) => e.kind === "sessionkit" && e.scenario === "counter" && e.incrementsKept !== null);
		const worst = counters.reduce<Entry | undefined>((w, e) => (w === undefined || e.incrementsKept! < w.incrementsKept! ? e : w), undefined);
		targets.push({
			name: "increments kept (counter, every store but the cookie)",
			goal: "100%",
			measured: worst ? `lowest ${pct(worst.incrementsKept!)} (${worst.framework}/${worst.store}); ${counters.map((e) => `${e.framework}/${e.store} ${pct(e.incrementsKept!)}`).join(", ")}` : "not measured",
			met: worst ? worst.incrementsKept! >= 0.99999 : null,
		});
	}
	{
		const reads = entries.filter((e) => e.kind === "sessionkit" && e.scenario === "read" && e.writesPerRequest !== null);
		const n = (e: Entry) => e.serverRequests ?? e.requests;
		const total = reads.reduce((sum, e) => sum + Math.round(e.writesPerRequest! * n(e)), 0);
		const redisRead = reads.filter((e) => e.redisWritesPerRequest !== null);
		const redisTotal = redisRead.reduce((sum, e) => sum + Math.round(e.redisWritesPerRequest! * n(e)), 0);
		targets.push({
			name: "store writes on read-only requests (between touches)",
			goal: "0",
			measured: reads.length ? `${total} writes over ${reads.reduce((s, e) => s + n(e), 0)} read-only requests (${reads.length} variants)${redisRead.length ? `; Redis INFO commandstats: ${redisTotal} data-changing commands` : ""}` : "not measured",
			met: reads.length ? total === 0 && redisTotal === 0 : null,
		});
	}
	{
		const reads = entries.filter((e) => e.kind === "sessionkit" && e.scenario === "read" && e.store !== "cookie");
		const per = reads.map((e) => {
			const value = e.roundTripsPerRequest ?? e.storeCallsPerRequest;
			return { e, value, label: e.roundTripsPerRequest !== null ? "round trips" : "store calls" };
		});
		targets.push({
			name: "store round trips to load a session (read-only route)",
			goal: "exactly 1",
			measured: per.length ? per.map(({ e, value, label }) => `${e.framework}/${e.store} ${value == null ? "—" : value.toFixed(2)} ${label}`).join(", ") : "not measured",
			met: per.length ? per.every(({ value }) => value !== null && Math.abs(value - 1) < 0.02) : null,
		});
	}
	return targets;
}

export function fmtRps(x: number): string {
	return x >= 1000 ? `${(x / 1000).toFixed(1)}k` : x.toFixed(0);
}

function fmt(x: number | null | undefined, digits = 2): string {
	return x == null || Number.isNaN(x) ? "—" : x.toFixed(digits);
}

function libraryLabel(e: Entry): string {
	return e.storeModule && e.kind === "peer" ? `${e.library} (${e.storeModule})` : e.library;
}

const COLUMNS = ["framework", "store", "scenario", "library", "req/s", "p50 ms", "p99 ms", "×ceiling", "+µs/req", "×peer", "RT/req", "calls/req", "writes/req", "kept"];

function row(e: Entry): string[] {
	return [
		FRAMEWORK_LABEL[e.framework],
		e.store,
		e.scenario,
		libraryLabel(e),
		e.reqPerSec.toFixed(0),
		fmt(e.p50Ms),
		fmt(e.p99Ms),
		fmt(e.ratioToCeiling),
		e.kind === "ceiling" ? "—" : fmt(e.addedMicrosPerRequest, 1),
		fmt(e.ratioToPeer),
		fmt(e.roundTripsPerRequest),
		fmt(e.storeCallsPerRequest),
		fmt(e.writesPerRequest),
		e.incrementsKept == null ? "—" : pct(e.incrementsKept),
	];
}

export function terminalTable(entries: Entry[]): string {
	const rows = [COLUMNS, ...entries.map(row)];
	const widths = COLUMNS.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
	const line = (r: string[]) => r.map((cell, i) => (i >= 4 ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!))).join("  ");
	return [line(COLUMNS), widths.map((w) => "-".repeat(w)).join("  "), ...entries.map((e) => line(row(e)))].join("\n");
}

export function targetsText(targets: Target[]): string {
	return targets.map((t) => `${t.met === null ? "n/a   " : t.met ? "MET   " : "MISSED"}  ${t.name}: goal ${t.goal}; measured ${t.measured}`).join("\n");
}

function mdTable(header: string[], rows: string[][], align?: string[]): string {
	const sep = header.map((_, i) => align?.[i] ?? "---");
	return [header, sep, ...rows].map((r) => `| ${r.join(" | ")} |`).join("\n");
}

export function markdown(report: Report): string {
	const out: string[] = [];
	out.push(`# sessionkit benchmark${report.quick ? " (quick run)" : ""}`, "");
	out.push(`Run ${report.date}. Generated by \`npm run bench${report.quick ? " -- --quick" : ""}\`; do not edit by hand. Chart: [latest.svg](latest.svg). Raw figures: [latest.json](latest.json).`, "");
	out.push("## Machine, versions, settings", "");
	out.push(mdTable(["", ""], [...Object.entries(report.machine).map(([k, v]) => [k, String(v)]), ...Object.entries(report.settings).map(([k, v]) => [k, String(v)])]), "");
	out.push(mdTable(["package", "version"], Object.entries(report.versions).map(([k, v]) => [k, v])), "");
	if (report.notes.length) out.push("Notes:", "", ...report.notes.map((n) => `- ${n}`), "");
	if (report.skipped.length) out.push("Skipped:", "", ...report.skipped.map((n) => `- ${n}`), "");
	out.push("## Targets", "");
	out.push(mdTable(["", "target", "goal", "measured"], report.targets.map((t) => [t.met === null ? "n/a" : t.met ? "✅ met" : "❌ missed", t.name, t.goal, t.measured])), "");
	out.push("## Results", "");
	out.push(
		"×ceiling: req/s over the same framework without session middleware, from interleaved 1-s windows (ceiling, variant, variant, ceiling; where sessionkit and the peer share a store, both servers run side by side: ceiling, sessionkit, peer, ceiling, peer, sessionkit, ceiling): each variant window sits next to a window of the framework's no-session server, which keeps running beside it, so a drift of the machine's speed cancels out; +µs/req: server CPU the session layer adds per request (1/req·s − 1/ceiling, over the same windows); ×peer: sessionkit's req/s over the peer's, from their interleaved windows on the same store and scenario. " +
			"RT/req: store round trips per request (Redis: socket reads on the library's own private redis-server during sequential requests; PostgreSQL: queries counted in the server process). " +
			"calls/req: calls into the store object (bench-only wrapper). writes/req: store writes (set/replace/merge/touch/delete calls on the store object; PostgreSQL: INSERT/UPDATE/DELETE statements); the Redis command mix, from INFO commandstats, follows each table. " +
			"kept: increments read back at the end over the requests the server received (counter scenario). Per-request figures divide by the requests the server received in the measured window. " +
			"empty middleware: the no-session server with one middleware that does nothing (Fastify: an empty onRequest and onSend hook), on the untouched route with a cookie of the same size: the least any session middleware costs in that framework. " +
			"minimal session (counter route): a hand-written session (node:http: in the handler; the others: the framework's own middleware or hook) that finds the cookie, SHA-256s the token, looks the record up in a Map, and in the route stores a copy with the counter plus one, and nothing else (no expiry, no validation, no merge): the least a server-side session with hashed tokens costs on that route.",
		"",
	);
	for (const framework of FRAMEWORKS) {
		const rows = report.entries.filter((e) => e.framework === framework);
		if (rows.length === 0) continue;
		out.push(`### ${FRAMEWORK_LABEL[framework]}`, "");
		out.push(mdTable(["store", "scenario", "library", "req/s", "p50 ms", "p99 ms", "×ceiling", "+µs/req", "×peer", "RT/req", "calls/req", "writes/req", "kept"], rows.map((e) => row(e).slice(1).map((c, i) => (i === 1 ? SCENARIO_LABEL[e.scenario] : c))), ["---", "---", "---", "--:", "--:", "--:", "--:", "--:", "--:", "--:", "--:", "--:", "--:"]), "");
		const redisRows = rows.filter((e) => e.redisCommands && Object.keys(e.redisCommands).length);
		if (redisRows.length) {
			out.push("Redis commands per request (INFO commandstats, commands run inside Lua scripts included):", "");
			out.push(mdTable(["library", "scenario", "commands"], redisRows.map((e) => [libraryLabel(e), e.scenario, Object.entries(e.redisCommands!).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ")])), "");
		}
	}
	out.push("## Stored bytes for a typical login session", "");
	out.push("The same login everywhere: user id, name, e-mail, two roles, locale, a CSRF token and one flash message (sessionkit also sets `subject`).", "");
	out.push(mdTable(["store", "library", "record bytes (key included)", "index bytes", "how measured"], storedRows(report.storedBytes)), "");
	if (report.micro.length) {
		out.push("## Micro-benchmarks (tinybench, one core)", "");
		out.push(mdTable(["operation", "ops/s", "mean µs", "p99 µs"], report.micro.map((m) => [m.name, m.opsPerSec.toFixed(0), m.meanUs.toFixed(2), m.p99Us.toFixed(2)]), ["---", "--:", "--:", "--:"]), "");
	}
	return out.join("\n");
}

function storedRows(stored: StoredBytes[]): string[][] {
	return [...stored]
		.sort((a, b) => a.store.localeCompare(b.store) || (a.library === "sessionkit" ? -1 : 1))
		.map((s) => [s.store, s.storeModule ? `${s.library} (${s.storeModule})` : s.library, String(s.recordBytes), s.indexBytes ? String(s.indexBytes) : "—", s.how]);
}

/** A hand-written grouped bar chart: ratio to the no-session ceiling, counter scenario. */
export function svgChart(report: Report): string {
	const bars = FRAMEWORKS.map((framework) => ({
		framework,
		entries: report.entries.filter((e) => e.framework === framework && e.scenario === "counter" && e.kind !== "floor" && e.ratioToCeiling !== null),
	})).filter((g) => g.entries.length > 0);
	const barW = 26;
	const gap = 6;
	const groupGap = 36;
	const left = 56;
	const top = 100;
	const plotH = 260;
	const bottom = 110;
	const maxRatio = Math.max(1.1, ...bars.flatMap((g) => g.entries.map((e) => e.ratioToCeiling!)));
	const y = (v: number) => top + plotH - (v / maxRatio) * plotH;
	let x = left + 20;
	const parts: string[] = [];
	for (const group of bars) {
		const start = x;
		for (const e of group.entries) {
			const v = e.ratioToCeiling!;
			const color = e.kind === "sessionkit" ? "#2f6fdf" : "#b0b7c3";
			parts.push(`<rect x="${x}" y="${y(v).toFixed(1)}" width="${barW}" height="${(top + plotH - y(v)).toFixed(1)}" fill="${color}"><title>${escapeXml(`${FRAMEWORK_LABEL[e.framework]} · ${e.store} · ${libraryLabel(e)}: ${v.toFixed(3)} of no-session (${e.reqPerSec.toFixed(0)} req/s)`)}</title></rect>`);
			parts.push(`<text x="${x + barW / 2}" y="${(y(v) - 4).toFixed(1)}" font-size="10" text-anchor="middle">${v.toFixed(2)}</text>`);
			parts.push(`<text transform="translate(${x + barW / 2 + 3},${top + plotH + 8}) rotate(60)" font-size="10">${escapeXml(e.store + (e.kind === "peer" ? " · peer" : ""))}</text>`);
			x += barW + gap;
		}
		const end = x - gap;
		const goal = group.framework === "express" ? 0.9 : 0.85;
		parts.push(`<line x1="${start - 4}" x2="${end + 4}" y1="${y(goal).toFixed(1)}" y2="${y(goal).toFixed(1)}" stroke="#d33" stroke-dasharray="4 3"/>`);
		parts.push(`<text x="${(start + end) / 2}" y="${top + plotH + bottom - 12}" font-size="13" font-weight="bold" text-anchor="middle">${escapeXml(FRAMEWORK_LABEL[group.framework])}</text>`);
		x += groupGap;
	}
	const width = Math.max(x + 20, 720);
	const height = top + plotH + bottom;
	const axis: string[] = [];
	for (let v = 0; v <= maxRatio + 1e-9; v += 0.25) {
		axis.push(`<line x1="${left}" x2="${width - 10}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#e5e7eb"/>`);
		axis.push(`<text x="${left - 6}" y="${(y(v) + 4).toFixed(1)}" font-size="10" text-anchor="end">${v.toFixed(2)}</text>`);
	}
	const title = "Counter route (read + write on every request), memory and networked stores";
	const subtitle = "req/s as a fraction of the same framework without sessions (1.00 = the session layer costs nothing)";
	const runInfo = `${report.quick ? "quick run, " : ""}${report.date.slice(0, 10)} · ${report.machine.cpu}, ${report.machine.cores} cores · Node ${report.machine.node} · ${String(report.settings.tool).split(" ")[0]} · bench/results/latest.md`;
	const legendY = 78;
	return [
		`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, -apple-system, Segoe UI, sans-serif">`,
		`<rect width="100%" height="100%" fill="#fff"/>`,
		`<text x="${left}" y="22" font-size="15" font-weight="bold">${escapeXml(title)}</text>`,
		`<text x="${left}" y="40" font-size="12" fill="#333">${escapeXml(subtitle)}</text>`,
		`<text x="${left}" y="56" font-size="10" fill="#666">${escapeXml(runInfo)}</text>`,
		`<rect x="${left}" y="${legendY - 9}" width="10" height="10" fill="#2f6fdf"/><text x="${left + 14}" y="${legendY}" font-size="11">sessionkit</text>`,
		`<rect x="${left + 90}" y="${legendY - 9}" width="10" height="10" fill="#b0b7c3"/><text x="${left + 104}" y="${legendY}" font-size="11">the framework's usual session library (peer)</text>`,
		`<line x1="${left + 360}" x2="${left + 380}" y1="${legendY - 4}" y2="${legendY - 4}" stroke="#d33" stroke-dasharray="4 3"/><text x="${left + 385}" y="${legendY}" font-size="11">target for the memory store (0.85; Express 0.9)</text>`,
		...axis,
		`<line x1="${left}" x2="${left}" y1="${top}" y2="${top + plotH}" stroke="#333"/>`,
		`<line x1="${left}" x2="${width - 10}" y1="${y(1).toFixed(1)}" y2="${y(1).toFixed(1)}" stroke="#333" stroke-width="0.8"/>`,
		...parts,
		`</svg>`,
		"",
	].join("\n");
}

function escapeXml(text: string): string {
	return text.replace(/[<>&"']/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;" })[c]!);
}
