/**
 * A run's time bound, and whether optional work still fits in it. The measured windows take a
 * fixed time, whatever the machine; what varies is how often the machine stalls, and each
 * stalled set of windows measured again adds its own length. So the driver plans its window
 * sets up front, counts them as they finish, and measures a stalled set again only while the
 * projected end of the run (the time so far, the remaining sets at the pace so far, and what
 * comes after the sets) stays within the bound.
 */
export class TimeBudget {
	readonly #boundS: number;
	readonly #afterSetsS: number;
	readonly #startedAt = Date.now();
	#firstSetAt: number | null = null;
	#planned = 0;
	#done = 0;

	/**
	 * @param boundS the run must end within this many seconds of its start
	 * @param afterSetsS seconds the run still needs after its last set (micro-benchmarks, report)
	 */
	constructor(boundS: number, afterSetsS: number) {
		this.#boundS = boundS;
		this.#afterSetsS = afterSetsS;
	}

	/** Adds window sets to the plan. */
	plan(sets: number): void {
		this.#planned += sets;
	}

	/** A planned set is about to start. */
	starting(): void {
		this.#firstSetAt ??= Date.now();
	}

	/** Planned sets have ended (measured, failed or skipped). */
	done(sets = 1): void {
		this.#done += sets;
	}

	/**
	 * Whether `extraS` more seconds now keep the run's projected end within its bound. The set
	 * that asks is counted among those still to come: a margin of one set.
	 */
	allows(extraS: number): boolean {
		const now = Date.now();
		const elapsedS = (now - this.#startedAt) / 1000;
		const perSetS = this.#done > 0 && this.#firstSetAt !== null ? (now - this.#firstSetAt) / 1000 / this.#done : 0;
		const remainingS = Math.max(0, this.#planned - this.#done) * perSetS;
		return elapsedS + extraS + remainingS + this.#afterSetsS <= this.#boundS;
	}
}
