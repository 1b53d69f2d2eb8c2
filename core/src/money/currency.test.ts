import { test } from 'node:test';
import assert from 'node:assert/strict';
import { currencyExponent, currencyExponents } from './currency.js';

test('ISO 4217 minor units: JPY 0, USD/EUR 2, KWD 3', () => {
  assert.deepEqual(currencyExponents(['USD', 'EUR', 'JPY', 'KWD', 'CLF']), { USD: 2, EUR: 2, JPY: 0, KWD: 3, CLF: 4 });
  assert.equal(currencyExponent('jpy'), 0);
});
