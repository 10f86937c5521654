// Plaid's official Node SDK (`plaid` on npm), unchanged, against the emulator: the quickstart
// flow, plus Plaid's error shape on a bad call.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { Configuration, PlaidApi, Products, CountryCode } from 'plaid';

const bin = process.env.BANKGRAPH_BIN ?? new URL('../../../target/debug/bankgraph', import.meta.url).pathname;
let child;
let basePath;

before(async () => {
  child = spawn(bin, ['plaid-emulator', '--addr', '127.0.0.1:0', '--transactions-per-item', '700'], {
    stdio: ['ignore', 'pipe', 'ignore'],
    env: { ...process.env, RUST_LOG: 'warn' },
  });
  basePath = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the emulator did not start')), 30000);
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      const m = buf.match(/listening on (http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.on('exit', () => reject(new Error('the emulator exited')));
  });
});

after(() => child?.kill());

const client = (secret = 'emulator_sandbox_secret') =>
  new PlaidApi(new Configuration({
    basePath,
    baseOptions: { headers: { 'PLAID-CLIENT-ID': 'emulator_client_id', 'PLAID-SECRET': secret, 'Plaid-Version': '2020-09-14' } },
  }));

test('the quickstart flow runs unchanged', async () => {
  const plaid = client();
  const link = await plaid.linkTokenCreate({
    user: { client_user_id: 'user-123' }, client_name: 'Plaid Quickstart',
    products: [Products.Transactions], country_codes: [CountryCode.Us], language: 'en',
  });
  assert.match(link.data.link_token, /^link-sandbox-/);
  const pub = await plaid.sandboxPublicTokenCreate({ institution_id: 'ins_109508', initial_products: [Products.Transactions] });
  const ex = await plaid.itemPublicTokenExchange({ public_token: pub.data.public_token });
  const access_token = ex.data.access_token;
  assert.match(access_token, /^access-sandbox-/);
  const accounts = await plaid.accountsGet({ access_token });
  assert.ok(accounts.data.accounts.some((a) => a.name === 'Plaid Checking'));
  const balances = await plaid.accountsBalanceGet({ access_token });
  assert.equal(balances.data.accounts.find((a) => a.subtype === 'checking').balances.available, 100);
  let cursor = '';
  let added = 0;
  let hasMore = true;
  while (hasMore) {
    const page = await plaid.transactionsSync({ access_token, cursor, count: 500 });
    added += page.data.added.length;
    hasMore = page.data.has_more;
    cursor = page.data.next_cursor;
  }
  assert.equal(added, 700);
  const item = await plaid.itemGet({ access_token });
  assert.equal(item.data.item.item_id, ex.data.item_id);
  await plaid.itemRemove({ access_token });
  await assert.rejects(plaid.itemGet({ access_token }), (e) => e.response.status === 400 && e.response.data.error_code === 'ITEM_NOT_FOUND');
});

test('wrong credentials get Plaid\'s error object', async () => {
  await assert.rejects(
    client('nope').sandboxPublicTokenCreate({ institution_id: 'ins_109508', initial_products: [Products.Transactions] }),
    (e) => e.response.status === 400 && e.response.data.error_code === 'INVALID_API_KEYS' && typeof e.response.data.request_id === 'string',
  );
});
