/**
 * What the TypeScript flows (sdk/<target>/e2e.ts) share: the settings they read, the CSV they
 * import, and the summary they print. Each flow goes through its own generated client only;
 * this file knows nothing of any of them.
 *
 * The summary's types are written out here, not taken from a client: a flow that fills it from
 * its generated types only compiles if those types have these fields with these types, so
 * `make sdk-check` also checks that the contract came through each generator.
 */
import { randomUUID } from 'node:crypto';

export const PROBLEM_BASE = 'https://storekeeper.dev/problems/';

export interface Settings {
  baseUrl: string;
  email: string;
  password: string;
  /** Unique per run (the server is shared): every SKU, code and name of the run starts with it. */
  tag: string;
}

export interface Shortage {
  line: number;
  product_id: number;
  location_id: number;
  requested: number;
  available: number;
}

export interface FlowSummary {
  token_type: string;
  category_id: number;
  product: { id: number; sku: string; category_id: number | null; reorder_point: number };
  location_id: number;
  receipt: { document_id: number; replay_document_id: number; replayed: boolean; balance_after: number };
  shipment: { document_id: number; balance_after: number };
  insufficient: { status: number; type: string; shortages: Shortage[]; pointers: string[] };
  duplicate_sku: { status: number; type: string; detail: string };
  etag: { first: string; second: string; stale_status: number; stale_type: string };
  /** The SKUs of the run's products, page by page, two per page, by following `next_cursor`. */
  pages: string[][];
  csv_import: { dry_run: boolean; rows: number; created: number; updated: number; unchanged: number };
}

/** A CSV file for importProductsCsv: one row updates the run's first product, one is new. */
export function importCsv(tag: string): string {
  return `sku,name,reorder_point\r\n${tag}-HAM,Claw hammer 16 oz,25\r\n${tag}-NEW,Bow saw 21 in,5\r\n`;
}

function setting(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`set ${name}`);
  }
  return value;
}

/**
 * Runs a flow with the settings from the environment (STOREKEEPER_URL, STOREKEEPER_EMAIL,
 * STOREKEEPER_PASSWORD, optional STOREKEEPER_TAG) and prints its summary as one JSON line;
 * any failure is printed and exits 1.
 */
export function main(flow: (settings: Settings) => Promise<FlowSummary>): void {
  Promise.resolve()
    .then(() =>
      flow({
        baseUrl: setting('STOREKEEPER_URL'),
        email: setting('STOREKEEPER_EMAIL'),
        password: setting('STOREKEEPER_PASSWORD'),
        tag: process.env.STOREKEEPER_TAG ?? `TS-${randomUUID().slice(0, 8).toUpperCase()}`,
      }),
    )
    .then(
      (summary) => console.log(JSON.stringify(summary)),
      (error: unknown) => {
        console.error(error);
        process.exitCode = 1;
      },
    );
}
