/**
 * Coverage instrumentation for the fuzzer: TypeScript source in, JavaScript
 * out with a counter bumped on every branch taken.
 *
 * Theory of operation. `instrument` transpiles one module with the
 * TypeScript compiler (the same emit as tsc, plus an inline source map so
 * stack traces name TypeScript lines) and, before emit, rewrites the tree:
 *
 * - every block (function bodies, loop bodies, try/catch/finally) starts
 *   with `__cov[id]++`;
 * - an `if` gets a counter in each arm, and an `else` with a counter when
 *   it has none (so "condition false" is an edge of its own);
 * - every `case`/`default` clause starts with a counter;
 * - the right operand of `&&`, `||`, `??` and both arms of `?:` become
 *   `(__cov[id]++, operand)`, as does an arrow function's expression body.
 *
 * `__cov` is a module-level alias of `globalThis.__fuzzCoverage`, one
 * Uint8Array shared by every instrumented module (counters wrap at 256, as
 * libFuzzer's 8-bit counters do). Ids are handed out consecutively from
 * `firstId`; the module records the end of its range in
 * `globalThis.__fuzzCoverageUsed`, so the engine scans only what is in use.
 *
 * Every integer literal in the code (constants, comparisons, case labels)
 * is collected into `globalThis.__fuzzDictionary`: the engine writes these
 * values into inputs, which gets a mutation past `etherType === 0x0806` or
 * `size > MAX_PAYLOAD_SIZE` without guessing (AFL's auto-dictionary idea).
 */
import ts from 'typescript';

/** Size of the shared counter array (ids wrap around past it). */
export const COVERAGE_MAP_SIZE = 1 << 16;

export interface Instrumented {
  code: string;
  /** Counters this module uses: ids firstId .. firstId + counters - 1 (mod COVERAGE_MAP_SIZE). */
  counters: number;
}

const SHORT_CIRCUIT = new Set<ts.SyntaxKind>([
  ts.SyntaxKind.AmpersandAmpersandToken,
  ts.SyntaxKind.BarBarToken,
  ts.SyntaxKind.QuestionQuestionToken,
]);

/** The integer value of a numeric literal (or -literal), if it is one. */
function integerLiteral(node: ts.Expression): number | null {
  let n = node;
  let sign = 1;
  if (ts.isPrefixUnaryExpression(n) && n.operator === ts.SyntaxKind.MinusToken) {
    sign = -1;
    n = n.operand;
  }
  if (!ts.isNumericLiteral(n)) return null;
  const v = sign * Number(n.text);
  return Number.isInteger(v) && v >= -0x8000_0000 && v <= 0xffff_ffff ? v : null;
}

export function instrument(source: string, fileName: string, firstId: number): Instrumented {
  let next = firstId;
  const dictionary = new Set<number>();
  const transformer: ts.TransformerFactory<ts.SourceFile> = (context) => {
    const f = context.factory;
    const bump = (): ts.Expression => {
      const id = next++ % COVERAGE_MAP_SIZE;
      return f.createPostfixIncrement(f.createElementAccessExpression(f.createIdentifier('__cov'), f.createNumericLiteral(id)));
    };
    const bumpStatement = (): ts.Statement => f.createExpressionStatement(bump());
    const counted = (e: ts.Expression): ts.Expression => f.createParenthesizedExpression(f.createCommaListExpression([bump(), e]));
    const countedBlock = (s: ts.Statement | undefined): ts.Block => {
      if (s === undefined) return f.createBlock([bumpStatement()], true);
      if (ts.isBlock(s)) return f.updateBlock(s, [bumpStatement(), ...s.statements]);
      return f.createBlock([bumpStatement(), s], true);
    };

    const visit = (node: ts.Node): ts.Node => {
      // Types, declarations without bodies and the like carry no code.
      if (ts.isTypeNode(node) || ts.isInterfaceDeclaration(node) || ts.isTypeAliasDeclaration(node)) return node;
      if (ts.isNumericLiteral(node) || ts.isPrefixUnaryExpression(node)) {
        const v = integerLiteral(node as ts.Expression);
        if (v !== null) dictionary.add(v >>> 0);
      }
      const n = ts.visitEachChild(node, visit, context);
      if (ts.isIfStatement(n)) {
        const otherwise = n.elseStatement;
        return f.updateIfStatement(n, n.expression, ts.isBlock(n.thenStatement) ? n.thenStatement : countedBlock(n.thenStatement),
          otherwise !== undefined && (ts.isBlock(otherwise) || ts.isIfStatement(otherwise)) ? otherwise : countedBlock(otherwise));
      }
      if (ts.isBlock(n)) return f.updateBlock(n, [bumpStatement(), ...n.statements]);
      if (ts.isCaseClause(n)) return f.updateCaseClause(n, n.expression, [bumpStatement(), ...n.statements]);
      if (ts.isDefaultClause(n)) return f.updateDefaultClause(n, [bumpStatement(), ...n.statements]);
      if ((ts.isForStatement(n) || ts.isForOfStatement(n) || ts.isForInStatement(n) || ts.isWhileStatement(n) || ts.isDoStatement(n)) && !ts.isBlock(n.statement)) {
        if (ts.isForStatement(n)) return f.updateForStatement(n, n.initializer, n.condition, n.incrementor, countedBlock(n.statement));
        if (ts.isForOfStatement(n)) return f.updateForOfStatement(n, n.awaitModifier, n.initializer, n.expression, countedBlock(n.statement));
        if (ts.isForInStatement(n)) return f.updateForInStatement(n, n.initializer, n.expression, countedBlock(n.statement));
        if (ts.isWhileStatement(n)) return f.updateWhileStatement(n, n.expression, countedBlock(n.statement));
        return f.updateDoStatement(n, countedBlock(n.statement), n.expression);
      }
      if (ts.isBinaryExpression(n) && SHORT_CIRCUIT.has(n.operatorToken.kind)) {
        return f.updateBinaryExpression(n, n.left, n.operatorToken, counted(n.right));
      }
      if (ts.isConditionalExpression(n)) {
        return f.updateConditionalExpression(n, n.condition, n.questionToken, counted(n.whenTrue), n.colonToken, counted(n.whenFalse));
      }
      if (ts.isArrowFunction(n) && !ts.isBlock(n.body)) {
        return f.updateArrowFunction(n, n.modifiers, n.typeParameters, n.parameters, n.type, n.equalsGreaterThanToken, counted(n.body));
      }
      return n;
    };
    return (sf) => ts.visitEachChild(sf, visit, context);
  };
  const out = ts.transpileModule(source, {
    fileName,
    compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext, inlineSourceMap: true, inlineSources: true },
    transformers: { before: [transformer] },
  });
  const end = Math.min(COVERAGE_MAP_SIZE, next);
  // On the first line, so the inline source map stays true for every other line.
  const prologue =
    `const __cov = (globalThis.__fuzzCoverage ??= new Uint8Array(${COVERAGE_MAP_SIZE})); ` +
    `globalThis.__fuzzCoverageUsed = Math.max(globalThis.__fuzzCoverageUsed ?? 0, ${end}); ` +
    `(globalThis.__fuzzDictionary ??= []).push(${[...dictionary].join(', ')}); `;
  return { code: prologue + out.outputText, counters: next - firstId };
}
