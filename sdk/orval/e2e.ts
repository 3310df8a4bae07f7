/**
 * An integrator's flow through the client that orval generates with its defaults (axios;
 * build/clients/orval/storekeeper.ts, from `bash scripts/generate-clients.sh orval`): log in,
 * create a category, a product and a location, receive (idempotently) and ship stock, handle
 * 409 and 412 problems, page through a list, and upload a CSV file. `make sdk-check`
 * type-checks it (strict); tests/e2e/test_sdk_typescript.py compiles it and runs it against the
 * real server:
 *
 *   STOREKEEPER_URL=http://127.0.0.1:8080 STOREKEEPER_EMAIL=... STOREKEEPER_PASSWORD=... \
 *     node build/sdk-e2e/sdk/orval/e2e.js
 *
 * It checks every answer itself and prints one JSON line with what the server said.
 *
 * orval's functions call the default axios instance, so the base URL and the token go on
 * `axios.defaults`. By default it leaves header parameters (Idempotency-Key, If-Match) out of
 * the signatures (they go in the axios options), and axios throws on an error status, with the
 * body untyped: `isAxiosError<Problem>` names the generated Problem type for it.
 */
import { strict as assert } from 'node:assert';
import { randomUUID } from 'node:crypto';

import axios, { type AxiosResponse, isAxiosError } from 'axios';

import {
  createCategory,
  createLocation,
  createProduct,
  createReceipt,
  createShipment,
  getProduct,
  importProductsCsv,
  listProducts,
  login,
  type Problem,
  type StockShortage,
  updateProduct,
} from '../../build/clients/orval/storekeeper';
import { type FlowSummary, importCsv, main, PROBLEM_BASE, type Settings } from '../e2e-support';

/** The problem document of a call that must fail; a success fails. */
async function problem(call: Promise<AxiosResponse>): Promise<Problem> {
  let response: AxiosResponse;
  try {
    response = await call;
  } catch (error: unknown) {
    if (isAxiosError<Problem>(error) && error.response !== undefined) {
      assert.match(String(error.response.headers['content-type']), /^application\/problem\+json/);
      return error.response.data;
    }
    throw error;
  }
  throw new Error(`expected a problem, got ${response.status}: ${JSON.stringify(response.data)}`);
}

/** A response header that must be there. */
function header(response: AxiosResponse, name: string): string {
  const value: unknown = response.headers[name.toLowerCase()];
  assert.equal(typeof value, 'string', `${name} header`);
  return String(value);
}

async function flow({ baseUrl, email, password, tag }: Settings): Promise<FlowSummary> {
  axios.defaults.baseURL = baseUrl;
  const { data: token } = await login({ email, password });
  assert.equal(token.token_type, 'bearer');
  axios.defaults.headers.common.Authorization = `Bearer ${token.access_token}`;

  const { data: category } = await createCategory({ name: `Tools ${tag}` });
  assert.equal(category.parent_id, null);
  const sku = `${tag}-HAM`;
  const { data: product } = await createProduct({
    sku,
    name: 'Claw hammer 16 oz',
    category_id: category.id,
    reorder_point: 10,
  });
  assert.equal(product.sku, sku);
  assert.equal(product.is_active, true);
  const { data: location } = await createLocation({ code: tag, name: 'Main warehouse' });

  // Receive 40 at 7.25; the retry with the same Idempotency-Key replays the first answer.
  const receiptBody = {
    location_id: location.id,
    reference: `PO-${tag}`,
    lines: [{ product_id: product.id, quantity: 40, unit_cost: '7.25' }],
  };
  const headers = { 'Idempotency-Key': randomUUID() };
  const { data: receipt } = await createReceipt(receiptBody, { headers });
  assert.equal(receipt.kind, 'receipt');
  const [received] = receipt.movements;
  assert.ok(received);
  assert.equal(received.unit_cost, '7.2500');
  const retry = await createReceipt(receiptBody, { headers });

  const { data: shipment } = await createShipment({
    location_id: location.id,
    reference: `SO-${tag}`,
    lines: [{ product_id: product.id, quantity: 3 }],
  });
  const [shipped] = shipment.movements;
  assert.ok(shipped);
  assert.equal(shipped.quantity, -3);

  // More than is on hand: a 409 problem whose shortages are typed (Problem.shortages).
  const short = await problem(
    createShipment({ location_id: location.id, lines: [{ product_id: product.id, quantity: 50 }] }),
  );
  assert.equal(short.type, `${PROBLEM_BASE}insufficient-stock`);
  const shortages: StockShortage[] = short.shortages ?? [];

  const duplicate = await problem(createProduct({ sku: sku.toLowerCase(), name: 'Another' }));

  // Conditional update: the current ETag wins once; the stale one is refused with 412.
  const firstTag = header(await getProduct(product.id), 'ETag');
  const updated = await updateProduct(product.id, { reorder_point: 20 }, { headers: { 'If-Match': firstTag } });
  const secondTag = header(updated, 'ETag');
  const stale = await problem(
    updateProduct(product.id, { reorder_point: 30 }, { headers: { 'If-Match': firstTag } }),
  );

  // Five more products, then every product of this run, two per page, by the cursor.
  for (let i = 1; i <= 5; i++) {
    await createProduct({ sku: `${tag}-P${i}`, name: `Part ${i}` });
  }
  const pages: string[][] = [];
  let cursor: string | undefined;
  do {
    const { data: page } = await listProducts({ q: tag, sort: 'sku', limit: 2, cursor });
    pages.push(page.items.map((item) => item.sku));
    cursor = page.next_cursor ?? undefined;
  } while (cursor !== undefined && pages.length < 20);

  // A file upload (multipart/form-data), checked and counted only.
  const file = new Blob([importCsv(tag)], { type: 'text/csv' });
  const { data: imported } = await importProductsCsv({ file }, { dry_run: true });

  return {
    token_type: token.token_type,
    category_id: category.id,
    product: {
      id: updated.data.id,
      sku: updated.data.sku,
      category_id: updated.data.category_id,
      reorder_point: updated.data.reorder_point,
    },
    location_id: location.id,
    receipt: {
      document_id: receipt.id,
      replay_document_id: retry.data.id,
      replayed: retry.headers['idempotent-replayed'] === 'true',
      balance_after: received.balance_after,
    },
    shipment: { document_id: shipment.id, balance_after: shipped.balance_after },
    insufficient: {
      status: short.status,
      type: short.type,
      shortages,
      pointers: (short.errors ?? []).map((error) => error.pointer ?? ''),
    },
    duplicate_sku: { status: duplicate.status, type: duplicate.type, detail: duplicate.detail ?? '' },
    etag: { first: firstTag, second: secondTag, stale_status: stale.status, stale_type: stale.type },
    pages,
    csv_import: imported,
  };
}

if (require.main === module) {
  main(flow);
}
