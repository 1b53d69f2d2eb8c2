/**
 * ISO 4217 minor units: how many decimals a currency's smallest unit has. meterd stores and bills
 * amounts as whole minor units (`gmv_cents` is "cents" only for 2-decimal currencies): 4299 is
 * 42.99 USD, 4299 JPY (0 decimals) and 4.299 KWD (3 decimals). Only the exceptions to 2 are listed
 * (ISO 4217 list one, amendment 177); Intl's CLDR digits are not used because they differ from
 * ISO for some currencies (e.g. ISK, HUF) in display conventions.
 */
const EXPONENTS: Readonly<Record<string, number>> = Object.freeze({
  BIF: 0,
  CLP: 0,
  DJF: 0,
  GNF: 0,
  ISK: 0,
  JPY: 0,
  KMF: 0,
  KRW: 0,
  PYG: 0,
  RWF: 0,
  UGX: 0,
  UYI: 0,
  VND: 0,
  VUV: 0,
  XAF: 0,
  XOF: 0,
  XPF: 0,
  BHD: 3,
  IQD: 3,
  JOD: 3,
  KWD: 3,
  LYD: 3,
  OMR: 3,
  TND: 3,
  CLF: 4,
  UYW: 4,
});

/** Decimals of `currency`'s minor unit (2 unless ISO 4217 says otherwise). */
export function currencyExponent(currency: string): number {
  return EXPONENTS[currency.toUpperCase()] ?? 2;
}

/** The exponents of the given currencies, for clients that format amounts (the dashboard). */
export function currencyExponents(currencies: Iterable<string>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const c of currencies) out[c] = currencyExponent(c);
  return out;
}
