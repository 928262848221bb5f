// The fuzz targets, in a fixed order (the bounded slice in `make test` and `make fuzz` run the same list).
import type { FuzzTarget } from './engine.js';
import { framer, loadVectors, msgpackBudget, protocolDecode, session } from './targets.js';

export async function allTargets(): Promise<FuzzTarget[]> {
  const vectors = await loadVectors();
  return [protocolDecode(vectors), framer(vectors), msgpackBudget(), await session()];
}
