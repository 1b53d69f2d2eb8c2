import ts from 'typescript';
import { fileURLToPath } from 'node:url';

/**
 * stripe-node's own TypeScript declarations, read with the compiler API: which fields an object
 * type declares, which are optional (`?`: sent only in some cases, e.g. `previous_attributes`),
 * which may be null, and which are free-form maps (metadata, payload). The conformance rule uses
 * them where Stripe's example fixture cannot tell (a field null in the example, or nullable).
 */
export interface FieldInfo {
  optional: boolean;
  nullable: boolean;
  type: TypeInfo | undefined;
}
export interface TypeInfo {
  /** Free-form keys (an index signature and no declared fields): only values are checked. */
  map: boolean;
  fields: Map<string, FieldInfo> | undefined;
  /** Element type of an array. */
  element: TypeInfo | undefined;
  /** JSON kinds the non-null type allows: string, number, boolean, object, array. */
  kinds: Set<string>;
}

export class StripeTypes {
  private readonly checker: ts.TypeChecker;
  private readonly aliases = new Map<string, ts.Type>();
  private readonly cache = new Map<ts.Type, TypeInfo>();

  /** `names`: object type → TS path under `Stripe.` (e.g. `billing.meter` → `Billing.Meter`). */
  constructor(names: Map<string, string>) {
    // A virtual file at the repository root (dist/test/conformance/ → ../../../../), where `stripe` resolves.
    const file = fileURLToPath(new URL('../../../../__conformance_types__.ts', import.meta.url));
    const text = `import type Stripe from 'stripe';\n${[...names].map(([, path], i) => `export type T${i} = Stripe.${path};`).join('\n')}\n`;
    const options: ts.CompilerOptions = {
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      target: ts.ScriptTarget.ES2022,
      strict: true,
      noEmit: true,
      skipLibCheck: true,
    };
    const host = ts.createCompilerHost(options);
    const getSourceFile = host.getSourceFile.bind(host);
    host.getSourceFile = (name, lang, ...rest) =>
      name === file ? ts.createSourceFile(name, text, lang) : getSourceFile(name, lang, ...rest);
    const fileExists = host.fileExists.bind(host);
    host.fileExists = (name) => name === file || fileExists(name);
    const program = ts.createProgram([file], options, host);
    this.checker = program.getTypeChecker();
    const source = program.getSourceFile(file)!;
    const keys = [...names.keys()];
    source.statements.forEach((st, i) => {
      if (!ts.isTypeAliasDeclaration(st)) return;
      const t = this.checker.getTypeAtLocation(st.name);
      // An unknown name resolves to the error type (`any`): then there is no type to consult.
      if (!(t.flags & ts.TypeFlags.Any)) this.aliases.set(keys[i - 1]!, t);
    });
  }

  typeOf(objectType: string): TypeInfo | undefined {
    const t = this.aliases.get(objectType);
    return t === undefined ? undefined : this.info(t);
  }

  private info(type: ts.Type): TypeInfo {
    const cached = this.cache.get(type);
    if (cached) return cached;
    const c = this.checker;
    const nonNull = c.getNonNullableType(type);
    const parts = nonNull.isUnion() ? nonNull.types : [nonNull];
    const kinds = new Set<string>();
    const info: TypeInfo = { map: false, fields: undefined, element: undefined, kinds };
    this.cache.set(type, info);
    for (const p of parts) {
      if (p.flags & ts.TypeFlags.StringLike) kinds.add('string');
      else if (p.flags & ts.TypeFlags.NumberLike) kinds.add('number');
      else if (p.flags & ts.TypeFlags.BooleanLike) kinds.add('boolean');
      else if (c.isArrayType(p)) {
        kinds.add('array');
        info.element = this.info(c.getTypeArguments(p as ts.TypeReference)[0]!);
      } else if (p.flags & ts.TypeFlags.Object) {
        kinds.add('object');
        const props = c.getPropertiesOfType(p);
        if (props.length === 0 && c.getIndexInfosOfType(p).length > 0) {
          info.map = true;
          continue;
        }
        info.fields ??= new Map();
        for (const s of props) {
          const decl = s.valueDeclaration ?? s.declarations?.[0];
          if (decl === undefined || ts.isMethodDeclaration(decl) || ts.isMethodSignature(decl)) continue;
          const pt = c.getTypeOfSymbolAtLocation(s, decl);
          const nullable = pt.isUnion()
            ? pt.types.some((x) => x.flags & ts.TypeFlags.Null)
            : Boolean(pt.flags & ts.TypeFlags.Null);
          info.fields.set(s.name, {
            optional: Boolean(s.flags & ts.SymbolFlags.Optional),
            nullable,
            type: this.info(pt),
          });
        }
      }
    }
    return info;
  }
}

/** `billing.meter_event` → `Billing.MeterEvent`, `billing_portal.session` → `BillingPortal.Session`, `v2.billing.meter_event` → `V2.Billing.MeterEvent`. */
export function stripeTypePath(objectType: string): string {
  const special: Record<string, string> = { event: 'Event', list: 'ApiList<unknown>' };
  // `v2.core.event:v1.billing.meter.error_report_triggered` → `Events.V1BillingMeterErrorReportTriggeredEvent`.
  if (objectType.startsWith('v2.core.event:')) {
    return `Events.${objectType
      .slice('v2.core.event:'.length)
      .split(/[._]/)
      .map((w) => w.charAt(0).toUpperCase() + w.slice(1))
      .join('')}Event`;
  }
  return (
    special[objectType] ??
    objectType
      .split('.')
      .map((seg) =>
        seg
          .split('_')
          .map((w) => w.charAt(0).toUpperCase() + w.slice(1))
          .join(''),
      )
      .join('.')
  );
}
