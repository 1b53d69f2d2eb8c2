import { test } from 'node:test';
import assert from 'node:assert/strict';
import { currencyExponent, currencyExponents, formatMinorUnits } from './currency.js';

test('ISO 4217 minor units: JPY 0, USD/EUR 2, KWD 3; negative amounts keep their sign', () => {
  assert.deepEqual(currencyExponents(['USD', 'EUR', 'JPY', 'KWD', 'CLF']), { USD: 2, EUR: 2, JPY: 0, KWD: 3, CLF: 4 });
  assert.equal(currencyExponent('jpy'), 0);
  assert.equal(formatMinorUnits(4299n, 'USD'), '42.99');
  assert.equal(formatMinorUnits('4299', 'JPY'), '4299');
  assert.equal(formatMinorUnits(4299n, 'KWD'), '4.299');
  assert.equal(formatMinorUnits(-5n, 'EUR'), '-0.05');
  assert.equal(formatMinorUnits(-9007199254740991n, 'USD'), '-90071992547409.91');
});
