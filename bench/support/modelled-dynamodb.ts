/**
 * An in-process model of DynamoDB for the benches (the fleet simulation at 100,000 devices cannot afford four moto
 * round trips per granted knock), behind a real `DynamoDBClient` whose `send` is answered by the model
 * (aws-sdk-client-mock), as bench/support/modelled-ec2.ts does for EC2. Benches only: the tests use moto, and
 * test/bench/modelled-dynamodb.test.ts runs the same commands against moto and this model and asserts the same
 * answers (that parity is what makes the model trustworthy).
 *
 * Supported, with DynamoDB's semantics:
 * - Tables with a string partition key only (no sort key, no indexes): `createTable(name, key)` or
 *   CreateTableCommand (test/support/moto.ts `createTable`); UpdateTimeToLive is accepted and recorded, but TTL
 *   deletion is not modelled (items stay, as DynamoDB may keep them up to two days).
 * - PutItem, GetItem, DeleteItem, UpdateItem, Scan (Limit = items evaluated before the filter; ExclusiveStartKey /
 *   LastEvaluatedKey pagination in partition-key order; LastEvaluatedKey whenever Limit was reached, as DynamoDB
 *   does, even at the last item; no 1 MB page limit), with `ConditionExpression`, `FilterExpression`,
 *   `UpdateExpression`, `ExpressionAttributeNames`, `ExpressionAttributeValues`, `ReturnValues` (Put/Delete: NONE,
 *   ALL_OLD; Update: NONE, ALL_OLD, ALL_NEW, UPDATED_OLD, UPDATED_NEW) and `ReturnValuesOnConditionCheckFailure`.
 * - Conditions and filters: `attribute_exists(p)`, `attribute_not_exists(p)`, `begins_with(p, v)`, `= <>` on
 *   S, N, BOOL, NULL, SS, NS and `< <= > >=` on S (UTF-8 byte order) and N (numeric), `AND`, `OR`, `NOT`,
 *   parentheses (precedence NOT > AND > OR). A comparison with a missing attribute or mismatched types is false,
 *   except `<>`, which is true.
 * - Updates: `SET p = v` with v an operand, `if_not_exists(p, v)`, `a + b`, `a - b` (N); `REMOVE p`; `ADD p v`
 *   (N, or a string or number set: union; a missing attribute starts at 0 or the empty set); `DELETE p v` (sets;
 *   the attribute goes when the set becomes empty). Operands are read from the item before the update.
 * - Top-level attribute paths only (`name` or `#name`; `a.b` and `a[0]` throw). Names via `#x` may be anything;
 *   a bare name that is a DynamoDB reserved word is a ValidationException, as are: an undefined or unused `#x` /
 *   `:x`, a key attribute in an update, two actions on one path, an operand of the wrong type, an item without
 *   its key, an empty set.
 * Answers: a failed condition rejects with the SDK's `ConditionalCheckFailedException`, an unknown table with
 * `ResourceNotFoundException`, invalid input with a `DynamoDBServiceException` named `ValidationException`
 * (`awsErrorCode` in functions/aws/errors.ts reads each). Anything outside the subset (another command, a
 * function such as `contains` or `size`, `BETWEEN`, `IN`, nested paths, legacy parameters such as `Expected`,
 * `ProjectionExpression`, B values in comparisons) rejects with a plain Error naming what is unsupported: never a
 * silently wrong answer.
 * Each answer comes `latencyMs` (default 0: at once, no simulated time) later on the injected timers. It counts
 * calls and error codes per command. Items are copied in and out (a caller cannot change the stored item).
 */
import {
  type AttributeValue,
  ConditionalCheckFailedException,
  CreateTableCommand,
  type CreateTableCommandInput,
  DeleteItemCommand,
  type DeleteItemCommandInput,
  type DeleteItemCommandOutput,
  DynamoDBClient,
  DynamoDBServiceException,
  GetItemCommand,
  type GetItemCommandInput,
  type GetItemCommandOutput,
  PutItemCommand,
  type PutItemCommandInput,
  type PutItemCommandOutput,
  ResourceNotFoundException,
  ScanCommand,
  type ScanCommandInput,
  type ScanCommandOutput,
  UpdateItemCommand,
  type UpdateItemCommandInput,
  type UpdateItemCommandOutput,
  UpdateTimeToLiveCommand,
  type UpdateTimeToLiveCommandInput,
} from '@aws-sdk/client-dynamodb';
import { mockClient } from 'aws-sdk-client-mock';
import type { Timers } from '../../functions/core/interfaces.ts';
import { answerAfter, modelTimers } from './modelled-latency.ts';
import { forgetStubHistory } from './stub-history.ts';

export type Item = Record<string, AttributeValue>;

export interface ModelledDynamoDbOptions {
  /** Where the latency passes. @default Node's timers */
  readonly timers?: Timers;
  /** Delay before each answer, ms. @default 0 (at once) */
  readonly latencyMs?: number;
}

export interface DynamoCallCount {
  readonly calls: number;
  /** Error answers per code. */
  readonly errors: Readonly<Record<string, number>>;
}

/** DynamoDB's reserved words (AWS "Reserved words in DynamoDB"): not usable as bare names in expressions. */
const RESERVED_WORDS: ReadonlySet<string> = new Set(
  (
    'ABORT ABSOLUTE ACTION ADD AFTER AGENT AGGREGATE ALL ALLOCATE ALTER ANALYZE AND ANY ARCHIVE ARE ARRAY AS ASC ' +
    'ASCII ASENSITIVE ASSERTION ASYMMETRIC AT ATOMIC ATTACH ATTRIBUTE AUTH AUTHORIZATION AUTHORIZE AUTO AVG BACK ' +
    'BACKUP BASE BATCH BEFORE BEGIN BETWEEN BIGINT BINARY BIT BLOB BLOCK BOOLEAN BOTH BREADTH BUCKET BULK BY BYTE ' +
    'CALL CALLED CALLING CAPACITY CASCADE CASCADED CASE CAST CATALOG CHAR CHARACTER CHECK CLASS CLOB CLOSE CLUSTER ' +
    'CLUSTERED CLUSTERING CLUSTERS COALESCE COLLATE COLLATION COLLECTION COLUMN COLUMNS COMBINE COMMENT COMMIT ' +
    'COMPACT COMPILE COMPRESS CONDITION CONFLICT CONNECT CONNECTION CONSISTENCY CONSISTENT CONSTRAINT CONSTRAINTS ' +
    'CONSTRUCTOR CONSUMED CONTINUE CONVERT COPY CORRESPONDING COUNT COUNTER CREATE CROSS CUBE CURRENT CURSOR CYCLE ' +
    'DATA DATABASE DATE DATETIME DAY DEALLOCATE DEC DECIMAL DECLARE DEFAULT DEFERRABLE DEFERRED DEFINE DEFINED ' +
    'DEFINITION DELETE DELIMITED DEPTH DEREF DESC DESCRIBE DESCRIPTOR DETACH DETERMINISTIC DIAGNOSTICS DIRECTORIES ' +
    'DISABLE DISCONNECT DISTINCT DISTRIBUTE DO DOMAIN DOUBLE DROP DUMP DURATION DYNAMIC EACH ELEMENT ELSE ELSEIF ' +
    'EMPTY ENABLE END EQUAL EQUALS ERROR ESCAPE ESCAPED EVAL EVALUATE EXCEEDED EXCEPT EXCEPTION EXCEPTIONS EXCLUSIVE ' +
    'EXEC EXECUTE EXISTS EXIT EXPLAIN EXPLODE EXPORT EXPRESSION EXTENDED EXTERNAL EXTRACT FAIL FALSE FAMILY FETCH ' +
    'FIELDS FILE FILTER FILTERING FINAL FINISH FIRST FIXED FLATTERN FLOAT FOR FORCE FOREIGN FORMAT FORWARD FOUND ' +
    'FREE FROM FULL FUNCTION FUNCTIONS GENERAL GENERATE GET GLOB GLOBAL GO GOTO GRANT GREATER GROUP GROUPING HANDLER ' +
    'HASH HAVE HAVING HEAP HIDDEN HOLD HOUR IDENTIFIED IDENTITY IF IGNORE IMMEDIATE IMPORT IN INCLUDING INCLUSIVE ' +
    'INCREMENT INCREMENTAL INDEX INDEXED INDEXES INDICATOR INFINITE INITIALLY INLINE INNER INNTER INOUT INPUT ' +
    'INSENSITIVE INSERT INSTEAD INT INTEGER INTERSECT INTERVAL INTO INVALIDATE IS ISOLATION ITEM ITEMS ITERATE JOIN ' +
    'KEY KEYS LAG LANGUAGE LARGE LAST LATERAL LEAD LEADING LEAVE LEFT LENGTH LESS LEVEL LIKE LIMIT LIMITED LINES ' +
    'LIST LOAD LOCAL LOCALTIME LOCALTIMESTAMP LOCATION LOCATOR LOCK LOCKS LOG LOGED LONG LOOP LOWER MAP MATCH ' +
    'MATERIALIZED MAX MAXLEN MEMBER MERGE METHOD METRICS MIN MINUS MINUTE MISSING MOD MODE MODIFIES MODIFY MODULE ' +
    'MONTH MULTI MULTISET NAME NAMES NATIONAL NATURAL NCHAR NCLOB NEW NEXT NO NONE NOT NULL NULLIF NUMBER NUMERIC ' +
    'OBJECT OF OFFLINE OFFSET OLD ON ONLINE ONLY OPAQUE OPEN OPERATOR OPTION OR ORDER ORDINALITY OTHER OTHERS OUT ' +
    'OUTER OUTPUT OVER OVERLAPS OVERRIDE OWNER PAD PARALLEL PARAMETER PARAMETERS PARTIAL PARTITION PARTITIONED ' +
    'PARTITIONS PATH PERCENT PERCENTILE PERMISSION PERMISSIONS PIPE PIPELINED PLAN POOL POSITION PRECISION PREPARE ' +
    'PRESERVE PRIMARY PRIOR PRIVATE PRIVILEGES PROCEDURE PROCESSED PROJECT PROJECTION PROPERTY PROVISIONING PUBLIC ' +
    'PUT QUERY QUIT QUORUM RAISE RANDOM RANGE RANK RAW READ READS REAL REBUILD RECORD RECURSIVE REDUCE REF REFERENCE ' +
    'REFERENCES REFERENCING REGEXP REGION REINDEX RELATIVE RELEASE REMAINDER RENAME REPEAT REPLACE REQUEST RESET ' +
    'RESIGNAL RESOURCE RESPONSE RESTORE RESTRICT RESULT RETURN RETURNING RETURNS REVERSE REVOKE RIGHT ROLE ROLES ' +
    'ROLLBACK ROLLUP ROUTINE ROW ROWS RULE RULES SAMPLE SATISFIES SAVE SAVEPOINT SCAN SCHEMA SCOPE SCROLL SEARCH ' +
    'SECOND SECTION SEGMENT SEGMENTS SELECT SELF SEMI SENSITIVE SEPARATE SEQUENCE SERIALIZABLE SESSION SET SETS ' +
    'SHARD SHARE SHARED SHORT SHOW SIGNAL SIMILAR SIZE SKEWED SMALLINT SNAPSHOT SOME SOURCE SPACE SPACES SPARSE ' +
    'SPECIFIC SPECIFICTYPE SPLIT SQL SQLCODE SQLERROR SQLEXCEPTION SQLSTATE SQLWARNING START STATE STATIC STATUS ' +
    'STORAGE STORE STORED STREAM STRING STRUCT STYLE SUB SUBMULTISET SUBPARTITION SUBSTRING SUBTYPE SUM SUPER ' +
    'SYMMETRIC SYNONYM SYSTEM TABLE TABLESAMPLE TEMP TEMPORARY TERMINATED TEXT THAN THEN THROUGHPUT TIME TIMESTAMP ' +
    'TIMEZONE TINYINT TO TOKEN TOTAL TOUCH TRAILING TRANSACTION TRANSFORM TRANSLATE TRANSLATION TREAT TRIGGER TRIM ' +
    'TRUE TRUNCATE TTL TUPLE TYPE UNDER UNDO UNION UNIQUE UNIT UNKNOWN UNLOGGED UNNEST UNPROCESSED UNSIGNED UNTIL ' +
    'UPDATE UPPER URL USAGE USE USER USERS USING UUID VACUUM VALUE VALUED VALUES VARCHAR VARIABLE VARIANCE VARINT ' +
    'VARYING VIEW VIEWS VIRTUAL VOID WAIT WHEN WHENEVER WHERE WHILE WINDOW WITH WITHIN WITHOUT WORK WRAPPED WRITE ' +
    'YEAR ZONE ' +
    ''
  )
    .split(' ')
    .filter((w) => w !== ''),
);

function validation(message: string): DynamoDBServiceException {
  return new DynamoDBServiceException({
    name: 'ValidationException',
    $fault: 'client',
    $metadata: { httpStatusCode: 400 },
    message,
  });
}

/** What the model does not implement: a plain Error, never mistaken for a DynamoDB answer. */
function unsupported(what: string): Error {
  return new Error(
    `ModelledDynamoDb: ${what} is not supported by the model (bench/support/modelled-dynamodb.ts)`,
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Attribute values

type ValueType = 'S' | 'N' | 'B' | 'BOOL' | 'NULL' | 'SS' | 'NS' | 'BS' | 'L' | 'M';

function typeOf(value: AttributeValue): ValueType {
  const keys = Object.keys(value).filter(
    (k) => (value as unknown as Record<string, unknown>)[k] !== undefined,
  );
  if (keys.length !== 1 || keys[0] === '$unknown')
    throw validation(
      `Supplied AttributeValue has ${keys.length === 1 ? 'an unknown type' : 'not exactly one type'}`,
    );
  return keys[0] as ValueType;
}

const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

function checkValue(value: AttributeValue, where: string): void {
  const type = typeOf(value);
  if (type === 'N' && !NUMBER.test(value.N ?? ''))
    throw validation(`A value provided cannot be converted into a number (${where})`);
  if (type === 'SS' || type === 'NS' || type === 'BS') {
    const set = (value as unknown as Record<string, unknown[]>)[type]!;
    if (set.length === 0)
      throw validation(
        `One or more parameter values were invalid: An string set  may not be empty (${where})`,
      );
    if (type === 'NS' && !set.every((n) => NUMBER.test(String(n))))
      throw validation(`A value provided cannot be converted into a number (${where})`);
    if (type !== 'BS' && new Set(set.map(String)).size !== set.length)
      throw validation(
        `One or more parameter values were invalid: Input collection contains duplicates (${where})`,
      );
  }
}

function copy<T>(value: T): T {
  return structuredClone(value);
}

function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function sameSet(a: readonly string[], b: readonly string[], numeric: boolean): boolean {
  const norm = (s: string) => (numeric ? String(Number(s)) : s);
  const left = new Set(a.map(norm));
  return left.size === new Set(b.map(norm)).size && b.every((s) => left.has(norm(s)));
}

function equal(a: AttributeValue, b: AttributeValue): boolean {
  const type = typeOf(a);
  if (type !== typeOf(b)) return false;
  switch (type) {
    case 'S':
      return a.S === b.S;
    case 'N':
      return Number(a.N) === Number(b.N);
    case 'BOOL':
      return a.BOOL === b.BOOL;
    case 'NULL':
      return true;
    case 'SS':
      return sameSet(a.SS!, b.SS!, false);
    case 'NS':
      return sameSet(a.NS!, b.NS!, true);
    default:
      throw unsupported(`comparing values of type ${type}`);
  }
}

/** <0, 0, >0, or undefined when the two cannot be ordered (missing, mismatched types). */
function order(a: AttributeValue, b: AttributeValue): number | undefined {
  const type = typeOf(a);
  if (type === 'B' || typeOf(b) === 'B') throw unsupported('ordering comparisons on B values');
  if ((type !== 'S' && type !== 'N') || type !== typeOf(b)) return undefined;
  return type === 'N' ? Number(a.N) - Number(b.N) : compareBytes(a.S!, b.S!);
}

// ---------------------------------------------------------------------------------------------------------------
// Expressions: tokens, parse trees, evaluation

type Token =
  | { readonly kind: 'name'; readonly text: string } // bare name, #placeholder, keyword or function name
  | { readonly kind: 'value'; readonly text: string } // :placeholder
  | { readonly kind: 'punct'; readonly text: string };

function tokenize(expression: string, what: string): Token[] {
  const tokens: Token[] = [];
  const pattern =
    /\s+|(#[A-Za-z0-9_]+)|(:[A-Za-z0-9_]+)|([A-Za-z_][A-Za-z0-9_]*)|(<>|<=|>=|[=<>(),+\-.[\]])/y;
  let at = 0;
  while (at < expression.length) {
    pattern.lastIndex = at;
    const match = pattern.exec(expression);
    if (match === null)
      throw validation(
        `Invalid ${what}: Syntax error; token: "${expression.slice(at, at + 10)}", near: "${expression}"`,
      );
    at = pattern.lastIndex;
    if (match[1] !== undefined || match[3] !== undefined) tokens.push({ kind: 'name', text: match[0] });
    else if (match[2] !== undefined) tokens.push({ kind: 'value', text: match[0] });
    else if (match[4] !== undefined) {
      if (match[4] === '.' || match[4] === '[' || match[4] === ']')
        throw unsupported(`the nested attribute path in ${what} "${expression}" (top-level attributes only)`);
      tokens.push({ kind: 'punct', text: match[4] });
    }
  }
  return tokens;
}

/** A top-level attribute, by its resolved name. */
interface PathNode {
  readonly kind: 'path';
  readonly name: string;
}
interface ValueNode {
  readonly kind: 'value';
  readonly value: AttributeValue;
}
type Operand = PathNode | ValueNode;

type Condition =
  | { readonly kind: 'and' | 'or'; readonly left: Condition; readonly right: Condition }
  | { readonly kind: 'not'; readonly operand: Condition }
  | { readonly kind: 'exists' | 'not_exists'; readonly path: PathNode }
  | { readonly kind: 'begins_with'; readonly path: Operand; readonly prefix: Operand }
  | { readonly kind: 'compare'; readonly op: string; readonly left: Operand; readonly right: Operand };

type SetValue =
  | Operand
  | { readonly kind: 'if_not_exists'; readonly path: PathNode; readonly fallback: Operand }
  | { readonly kind: '+' | '-'; readonly left: SetValue; readonly right: SetValue };

type UpdateAction =
  | { readonly kind: 'SET'; readonly path: PathNode; readonly value: SetValue }
  | { readonly kind: 'REMOVE'; readonly path: PathNode }
  | { readonly kind: 'ADD' | 'DELETE'; readonly path: PathNode; readonly value: ValueNode };

/** The placeholders a request supplies, and which of them its expressions used. */
class Placeholders {
  readonly usedNames = new Set<string>();
  readonly usedValues = new Set<string>();
  readonly names: Record<string, string> | undefined;
  readonly values: Item | undefined;
  constructor(names: Record<string, string> | undefined, values: Item | undefined) {
    this.names = names;
    this.values = values;
    if (names !== undefined && Object.keys(names).length === 0)
      throw validation('ExpressionAttributeNames must not be empty');
    if (values !== undefined && Object.keys(values).length === 0)
      throw validation('ExpressionAttributeValues must not be empty');
    for (const [key, value] of Object.entries(values ?? {}))
      checkValue(value, `ExpressionAttributeValues ${key}`);
  }
  name(token: string): string {
    const name = this.names?.[token];
    if (name === undefined)
      throw validation(
        `An expression attribute name used in the document path is not defined; attribute name: ${token}`,
      );
    this.usedNames.add(token);
    return name;
  }
  value(token: string): AttributeValue {
    const value = this.values?.[token];
    if (value === undefined)
      throw validation(
        `An expression attribute value used in expression is not defined; attribute value: ${token}`,
      );
    this.usedValues.add(token);
    return value;
  }
  /** DynamoDB refuses a request whose placeholders are not all used by its expressions. */
  checkAllUsed(): void {
    const unusedNames = Object.keys(this.names ?? {}).filter((k) => !this.usedNames.has(k));
    if (unusedNames.length > 0)
      throw validation(
        `Value provided in ExpressionAttributeNames unused in expressions: keys: {${unusedNames.join(', ')}}`,
      );
    const unusedValues = Object.keys(this.values ?? {}).filter((k) => !this.usedValues.has(k));
    if (unusedValues.length > 0)
      throw validation(
        `Value provided in ExpressionAttributeValues unused in expressions: keys: {${unusedValues.join(', ')}}`,
      );
  }
}

const COMPARATORS: ReadonlySet<string> = new Set(['=', '<>', '<', '<=', '>', '>=']);
const UPDATE_CLAUSES: ReadonlySet<string> = new Set(['SET', 'REMOVE', 'ADD', 'DELETE']);
const CONDITION_FUNCTIONS: ReadonlySet<string> = new Set([
  'attribute_exists',
  'attribute_not_exists',
  'begins_with',
]);
const KNOWN_UNSUPPORTED_FUNCTIONS: ReadonlySet<string> = new Set([
  'contains',
  'size',
  'attribute_type',
  'list_append',
]);

class Parser {
  #at = 0;
  readonly tokens: readonly Token[];
  readonly expression: string;
  readonly what: string;
  readonly placeholders: Placeholders;
  constructor(tokens: readonly Token[], expression: string, what: string, placeholders: Placeholders) {
    this.tokens = tokens;
    this.expression = expression;
    this.what = what;
    this.placeholders = placeholders;
  }

  get done(): boolean {
    return this.#at >= this.tokens.length;
  }
  peek(offset = 0): Token | undefined {
    return this.tokens[this.#at + offset];
  }
  next(): Token {
    const token = this.tokens[this.#at++];
    if (token === undefined) throw this.syntax('<EOF>');
    return token;
  }
  syntax(near: string): DynamoDBServiceException {
    return validation(`Invalid ${this.what}: Syntax error; token: "${near}", near: "${this.expression}"`);
  }
  expect(text: string): void {
    const token = this.next();
    if (token.text !== text) throw this.syntax(token.text);
  }
  isKeyword(word: string, offset = 0): boolean {
    const token = this.peek(offset);
    return token?.kind === 'name' && token.text.toUpperCase() === word;
  }

  path(): PathNode {
    const token = this.next();
    if (token.kind !== 'name') throw this.syntax(token.text);
    if (token.text.startsWith('#')) return { kind: 'path', name: this.placeholders.name(token.text) };
    if (RESERVED_WORDS.has(token.text.toUpperCase()))
      throw validation(
        `Invalid ${this.what}: Attribute name is a reserved keyword; reserved keyword: ${token.text}`,
      );
    return { kind: 'path', name: token.text };
  }

  operand(): Operand {
    const token = this.peek();
    if (token === undefined) throw this.syntax('<EOF>');
    if (token.kind === 'value') {
      this.next();
      return { kind: 'value', value: this.placeholders.value(token.text) };
    }
    if (token.kind === 'name' && this.peek(1)?.text === '(') this.unsupportedFunction(token.text);
    return this.path();
  }

  unsupportedFunction(name: string): never {
    if (KNOWN_UNSUPPORTED_FUNCTIONS.has(name)) throw unsupported(`the function ${name}() in ${this.what}`);
    throw validation(`Invalid ${this.what}: Invalid function name; function: ${name}`);
  }

  // condition := or; or := and (OR and)*; and := not (AND not)*; not := NOT not | primary
  condition(): Condition {
    let left = this.conjunction();
    while (this.isKeyword('OR')) {
      this.next();
      left = { kind: 'or', left, right: this.conjunction() };
    }
    return left;
  }
  conjunction(): Condition {
    let left = this.negation();
    while (this.isKeyword('AND')) {
      this.next();
      left = { kind: 'and', left, right: this.negation() };
    }
    return left;
  }
  negation(): Condition {
    if (this.isKeyword('NOT')) {
      this.next();
      return { kind: 'not', operand: this.negation() };
    }
    return this.primary();
  }
  primary(): Condition {
    const token = this.peek();
    if (token === undefined) throw this.syntax('<EOF>');
    if (token.text === '(') {
      this.next();
      const inner = this.condition();
      this.expect(')');
      return inner;
    }
    if (token.kind === 'name' && this.peek(1)?.text === '(') {
      if (!CONDITION_FUNCTIONS.has(token.text)) this.unsupportedFunction(token.text);
      this.next();
      this.expect('(');
      let condition: Condition;
      if (token.text === 'begins_with') {
        const path = this.operand();
        this.expect(',');
        condition = { kind: 'begins_with', path, prefix: this.operand() };
      } else {
        condition = { kind: token.text === 'attribute_exists' ? 'exists' : 'not_exists', path: this.path() };
      }
      this.expect(')');
      return condition;
    }
    const left = this.operand();
    if (this.isKeyword('BETWEEN') || this.isKeyword('IN'))
      throw unsupported(`${this.peek()!.text} in ${this.what}`);
    const op = this.next();
    if (op.kind !== 'punct' || !COMPARATORS.has(op.text)) throw this.syntax(op.text);
    return { kind: 'compare', op: op.text, left, right: this.operand() };
  }

  // update := (SET a (, a)* | REMOVE p (, p)* | ADD p v (, ...)* | DELETE p v (, ...)*)+
  update(): UpdateAction[] {
    const actions: UpdateAction[] = [];
    const seen = new Set<string>();
    while (!this.done) {
      const clause = this.next();
      const keyword = clause.text.toUpperCase();
      if (clause.kind !== 'name' || !UPDATE_CLAUSES.has(keyword)) throw this.syntax(clause.text);
      if (seen.has(keyword))
        throw validation(
          `Invalid ${this.what}: The "${keyword}" section can only be used once in an update expression;`,
        );
      seen.add(keyword);
      do {
        const path = this.path();
        if (keyword === 'SET') {
          this.expect('=');
          actions.push({ kind: 'SET', path, value: this.setValue() });
        } else if (keyword === 'REMOVE') {
          actions.push({ kind: 'REMOVE', path });
        } else {
          const token = this.next();
          if (token.kind !== 'value') {
            if (token.kind === 'name')
              throw validation(
                `Invalid ${this.what}: Syntax error; ${keyword} takes a value (:v), got "${token.text}"`,
              );
            throw this.syntax(token.text);
          }
          actions.push({
            kind: keyword as 'ADD' | 'DELETE',
            path,
            value: { kind: 'value', value: this.placeholders.value(token.text) },
          });
        }
      } while (this.peek()?.text === ',' && this.next() !== undefined);
    }
    if (actions.length === 0) throw this.syntax('<EOF>');
    return actions;
  }
  setValue(): SetValue {
    const left = this.setTerm();
    const op = this.peek();
    if (op?.text === '+' || op?.text === '-') {
      this.next();
      return { kind: op.text, left, right: this.setTerm() };
    }
    return left;
  }
  setTerm(): SetValue {
    const token = this.peek();
    if (token?.kind === 'name' && this.peek(1)?.text === '(') {
      if (token.text !== 'if_not_exists') this.unsupportedFunction(token.text);
      this.next();
      this.expect('(');
      const path = this.path();
      this.expect(',');
      const fallback = this.operand();
      this.expect(')');
      return { kind: 'if_not_exists', path, fallback };
    }
    return this.operand();
  }
}

function parseCondition(expression: string, what: string, placeholders: Placeholders): Condition {
  if (expression.trim() === '') throw validation(`Invalid ${what}: The expression can not be empty;`);
  const parser = new Parser(tokenize(expression, what), expression, what, placeholders);
  const condition = parser.condition();
  if (!parser.done) throw parser.syntax(parser.peek()!.text);
  return condition;
}

function parseUpdate(expression: string, placeholders: Placeholders): UpdateAction[] {
  const what = 'UpdateExpression';
  if (expression.trim() === '') throw validation(`Invalid ${what}: The expression can not be empty;`);
  return new Parser(tokenize(expression, what), expression, what, placeholders).update();
}

function resolve(operand: Operand, item: Item | undefined): AttributeValue | undefined {
  return operand.kind === 'value' ? operand.value : item?.[operand.name];
}

function holds(condition: Condition, item: Item | undefined): boolean {
  switch (condition.kind) {
    case 'and':
      return holds(condition.left, item) && holds(condition.right, item);
    case 'or':
      return holds(condition.left, item) || holds(condition.right, item);
    case 'not':
      return !holds(condition.operand, item);
    case 'exists':
      return item?.[condition.path.name] !== undefined;
    case 'not_exists':
      return item?.[condition.path.name] === undefined;
    case 'begins_with': {
      const value = resolve(condition.path, item);
      const prefix = resolve(condition.prefix, item);
      if (prefix !== undefined && typeOf(prefix) !== 'S' && typeOf(prefix) !== 'B')
        throw validation(
          'Invalid ConditionExpression: Incorrect operand type for operator or function; operator or function: begins_with',
        );
      if (value === undefined || prefix === undefined) return false;
      if (typeOf(prefix) === 'B' || typeOf(value) === 'B') throw unsupported('begins_with on B values');
      return typeOf(value) === 'S' && value.S!.startsWith(prefix.S!);
    }
    case 'compare': {
      const left = resolve(condition.left, item);
      const right = resolve(condition.right, item);
      if (condition.op === '=' || condition.op === '<>') {
        const same = left !== undefined && right !== undefined && equal(left, right);
        return condition.op === '=' ? same : !same;
      }
      if (left === undefined || right === undefined) return false;
      const sign = order(left, right);
      if (sign === undefined) return false;
      if (condition.op === '<') return sign < 0;
      if (condition.op === '<=') return sign <= 0;
      if (condition.op === '>') return sign > 0;
      return sign >= 0;
    }
  }
}

function numberText(n: number): string {
  if (!Number.isFinite(n))
    throw validation(
      'Number overflow. Attempting to store a number with magnitude larger than supported range',
    );
  return String(n);
}

function evaluateSet(value: SetValue, item: Item | undefined): AttributeValue {
  if (value.kind === 'value') return value.value;
  if (value.kind === 'path') {
    const found = item?.[value.name];
    if (found === undefined)
      throw validation('The provided expression refers to an attribute that does not exist in the item');
    return found;
  }
  if (value.kind === 'if_not_exists') return item?.[value.path.name] ?? evaluateSet(value.fallback, item);
  const left = evaluateSet(value.left, item);
  const right = evaluateSet(value.right, item);
  if (typeOf(left) !== 'N' || typeOf(right) !== 'N')
    throw validation(`An operand in the update expression has an incorrect data type`);
  const a = Number(left.N);
  const b = Number(right.N);
  return { N: numberText(value.kind === '+' ? a + b : a - b) };
}

const SET_TYPES = ['SS', 'NS', 'BS'] as const;
type SetType = (typeof SET_TYPES)[number];

function setTypeOf(value: AttributeValue): SetType | undefined {
  const type = typeOf(value);
  return (SET_TYPES as readonly string[]).includes(type) ? (type as SetType) : undefined;
}

function setMembers(value: AttributeValue, type: SetType): string[] {
  if (type === 'BS') throw unsupported('binary sets (BS) in ADD or DELETE');
  return (value as unknown as Record<string, string[]>)[type]!;
}

/** The item after `actions`, all operands read from `item` (the item before the update). */
function applyUpdate(actions: readonly UpdateAction[], before: Item, keyName: string): Item {
  const after: Item = copy(before);
  const touched = new Set<string>();
  for (const action of actions) {
    const name = action.path.name;
    if (name === keyName)
      throw validation(
        `One or more parameter values were invalid: Cannot update attribute ${name}. This attribute is part of the key`,
      );
    if (touched.has(name))
      throw validation(
        `Invalid UpdateExpression: Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [${name}], path two: [${name}]`,
      );
    touched.add(name);
  }
  for (const action of actions) {
    const name = action.path.name;
    const current = before[name];
    if (action.kind === 'SET') {
      after[name] = copy(evaluateSet(action.value, before));
    } else if (action.kind === 'REMOVE') {
      delete after[name];
    } else if (action.kind === 'ADD') {
      const value = action.value.value;
      const type = typeOf(value);
      const setType = setTypeOf(value);
      if (type !== 'N' && setType === undefined)
        throw validation(
          'Invalid UpdateExpression: Incorrect operand type for operator or function; operator: ADD, operand type: ' +
            type,
        );
      if (current !== undefined && typeOf(current) !== type)
        throw validation('An operand in the update expression has an incorrect data type');
      if (type === 'N') {
        after[name] = { N: numberText(Number(current?.N ?? 0) + Number(value.N)) };
      } else {
        const members = current === undefined ? [] : [...setMembers(current, setType!)];
        const has = new Set(members.map((m) => (setType === 'NS' ? String(Number(m)) : m)));
        for (const m of setMembers(value, setType!)) {
          const norm = setType === 'NS' ? String(Number(m)) : m;
          if (!has.has(norm)) {
            has.add(norm);
            members.push(m);
          }
        }
        after[name] = { [setType!]: members } as unknown as AttributeValue;
      }
    } else {
      const value = action.value.value;
      const setType = setTypeOf(value);
      if (setType === undefined)
        throw validation(
          `Invalid UpdateExpression: Incorrect operand type for operator or function; operator: DELETE, operand type: ${typeOf(value)}`,
        );
      if (current === undefined) continue;
      if (typeOf(current) !== setType)
        throw validation('An operand in the update expression has an incorrect data type');
      const norm = (m: string) => (setType === 'NS' ? String(Number(m)) : m);
      const gone = new Set(setMembers(value, setType).map(norm));
      const left = setMembers(current, setType).filter((m) => !gone.has(norm(m)));
      if (left.length === 0) delete after[name];
      else after[name] = { [setType]: left } as unknown as AttributeValue;
    }
  }
  return after;
}

// ---------------------------------------------------------------------------------------------------------------
// Tables and commands

interface Table {
  readonly keyName: string;
  readonly items: Map<string, Item>;
  ttlAttribute: string | undefined;
}

type Command =
  | 'CreateTable'
  | 'UpdateTimeToLive'
  | 'PutItem'
  | 'GetItem'
  | 'DeleteItem'
  | 'UpdateItem'
  | 'Scan';

/** Parameters the model refuses to ignore (each would change the answer). */
const UNSUPPORTED_PARAMETERS = [
  'Expected',
  'ConditionalOperator',
  'AttributeUpdates',
  'ScanFilter',
  'AttributesToGet',
  'ProjectionExpression',
  'Select',
  'Segment',
  'TotalSegments',
  'IndexName',
  'ReturnItemCollectionMetrics',
] as const;

function refuseUnsupported(command: Command, input: object): void {
  const fields = input as Record<string, unknown>;
  for (const name of UNSUPPORTED_PARAMETERS) {
    if (fields[name] !== undefined) throw unsupported(`${command} parameter ${name}`);
  }
  if (fields.ReturnConsumedCapacity !== undefined && fields.ReturnConsumedCapacity !== 'NONE')
    throw unsupported(`${command} parameter ReturnConsumedCapacity`);
}

export class ModelledDynamoDb {
  readonly client: DynamoDBClient;
  readonly #tables = new Map<string, Table>();
  readonly #counts = new Map<string, { calls: number; errors: Record<string, number> }>();
  readonly #mock: ReturnType<typeof mockClient>;
  readonly #latencyMs: number;
  readonly #timers: Timers;

  constructor(options: ModelledDynamoDbOptions = {}) {
    this.#latencyMs = options.latencyMs ?? 0;
    this.#timers = options.timers ?? modelTimers;
    this.client = new DynamoDBClient({
      region: 'us-east-1',
      credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' },
    });
    this.#mock = mockClient(this.client);
    this.#mock.onAnyCommand().callsFake(() => {
      throw unsupported('this DynamoDB command');
    });
    this.#mock
      .on(CreateTableCommand)
      .callsFake((input: CreateTableCommandInput) =>
        this.#answer('CreateTable', () => this.#createTableCommand(input)),
      );
    this.#mock
      .on(UpdateTimeToLiveCommand)
      .callsFake((input: UpdateTimeToLiveCommandInput) =>
        this.#answer('UpdateTimeToLive', () => this.#updateTtl(input)),
      );
    this.#mock
      .on(PutItemCommand)
      .callsFake((input: PutItemCommandInput) => this.#answer('PutItem', () => this.#put(input)));
    this.#mock
      .on(GetItemCommand)
      .callsFake((input: GetItemCommandInput) => this.#answer('GetItem', () => this.#get(input)));
    this.#mock
      .on(DeleteItemCommand)
      .callsFake((input: DeleteItemCommandInput) => this.#answer('DeleteItem', () => this.#delete(input)));
    this.#mock
      .on(UpdateItemCommand)
      .callsFake((input: UpdateItemCommandInput) => this.#answer('UpdateItem', () => this.#update(input)));
    this.#mock
      .on(ScanCommand)
      .callsFake((input: ScanCommandInput) => this.#answer('Scan', () => this.#scan(input)));
  }

  /** A table whose partition key `keyName` is a string (S). */
  createTable(name: string, keyName = 'pk'): void {
    if (this.#tables.has(name)) throw new ResourceInUse(name);
    this.#tables.set(name, { keyName, items: new Map(), ttlAttribute: undefined });
  }

  /** A copy of every item of `table`, in partition-key order. */
  items(table: string): Item[] {
    return this.#sorted(this.#table(table)).map(copy);
  }

  /** Calls and error codes per command since the start. */
  counts(): Readonly<Record<string, DynamoCallCount>> {
    return Object.fromEntries(
      [...this.#counts].map(([k, v]) => [k, { calls: v.calls, errors: { ...v.errors } }]),
    );
  }

  restore(): void {
    this.#mock.restore();
  }

  #answer<T>(command: Command, run: () => T): Promise<T> {
    const count = this.#counts.get(command) ?? { calls: 0, errors: {} };
    this.#counts.set(command, count);
    count.calls++;
    forgetStubHistory(this.#mock, count.calls);
    const respond = (): T => {
      try {
        return run();
      } catch (error) {
        const code = error instanceof DynamoDBServiceException ? error.name : 'Unsupported';
        count.errors[code] = (count.errors[code] ?? 0) + 1;
        throw error;
      }
    };
    return answerAfter(this.#timers, this.#latencyMs, respond);
  }

  #table(name: string | undefined): Table {
    const table = name === undefined ? undefined : this.#tables.get(name);
    if (table === undefined)
      throw new ResourceNotFoundException({
        $metadata: { httpStatusCode: 400 },
        message: `Requested resource not found: Table: ${String(name)} not found`,
      });
    return table;
  }

  #sorted(table: Table): Item[] {
    return [...table.items.entries()].sort(([a], [b]) => compareBytes(a, b)).map(([, item]) => item);
  }

  /** The partition key's value of a Key (exactly the key attribute, a non-empty S). */
  #keyOf(table: Table, key: Item | undefined, what = 'Key'): string {
    const names = Object.keys(key ?? {});
    if (names.length !== 1 || names[0] !== table.keyName)
      throw validation('The provided key element does not match the schema');
    return this.#keyValue(table, key![table.keyName]!, what);
  }

  #keyValue(table: Table, value: AttributeValue, what: string): string {
    if (typeOf(value) !== 'S')
      throw validation(
        `One or more parameter values were invalid: Type mismatch for key ${table.keyName} expected: S actual: ${typeOf(value)}`,
      );
    if (value.S === '')
      throw validation(
        `One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an empty string value. Key: ${table.keyName} (${what})`,
      );
    return value.S!;
  }

  #createTableCommand(input: CreateTableCommandInput) {
    const keys = input.KeySchema ?? [];
    const hash = keys[0];
    if (keys.length !== 1 || hash?.KeyType !== 'HASH' || hash.AttributeName === undefined)
      throw unsupported('a table without exactly one HASH key (sort keys)');
    const type = input.AttributeDefinitions?.find(
      (d) => d.AttributeName === hash.AttributeName,
    )?.AttributeType;
    if (type !== 'S') throw unsupported(`a partition key of type ${String(type)} (S only)`);
    if (input.GlobalSecondaryIndexes !== undefined || input.LocalSecondaryIndexes !== undefined)
      throw unsupported('secondary indexes');
    this.createTable(input.TableName ?? '', hash.AttributeName);
    return { TableDescription: { TableName: input.TableName, TableStatus: 'ACTIVE', KeySchema: keys } };
  }

  #updateTtl(input: UpdateTimeToLiveCommandInput) {
    const table = this.#table(input.TableName);
    const spec = input.TimeToLiveSpecification;
    table.ttlAttribute = spec?.Enabled === true ? spec.AttributeName : undefined;
    return { TimeToLiveSpecification: spec };
  }

  /** Evaluates the request's ConditionExpression on the stored item (undefined: none stored). */
  #check(
    input: { ReturnValuesOnConditionCheckFailure?: string },
    condition: Condition | undefined,
    stored: Item | undefined,
  ): void {
    if (condition === undefined || holds(condition, stored)) return;
    const withItem = input.ReturnValuesOnConditionCheckFailure === 'ALL_OLD' && stored !== undefined;
    throw new ConditionalCheckFailedException({
      $metadata: { httpStatusCode: 400 },
      message: 'The conditional request failed',
      ...(withItem ? { Item: copy(stored) } : {}),
    });
  }

  #conditionOf(
    input: { ConditionExpression?: string; ReturnValuesOnConditionCheckFailure?: string },
    placeholders: Placeholders,
  ): Condition | undefined {
    const onFailure = input.ReturnValuesOnConditionCheckFailure;
    if (onFailure !== undefined && onFailure !== 'NONE' && onFailure !== 'ALL_OLD')
      throw validation(
        `1 validation error detected: Value '${onFailure}' at 'returnValuesOnConditionCheckFailure' failed to satisfy constraint`,
      );
    return input.ConditionExpression === undefined
      ? undefined
      : parseCondition(input.ConditionExpression, 'ConditionExpression', placeholders);
  }

  #returnValues(value: string | undefined, allowed: readonly string[]): string {
    const returnValues = value ?? 'NONE';
    if (!allowed.includes(returnValues))
      throw validation(`Return values set to invalid value: ${returnValues}`);
    return returnValues;
  }

  #put(input: PutItemCommandInput): PutItemCommandOutput {
    refuseUnsupported('PutItem', input);
    const table = this.#table(input.TableName);
    const returnValues = this.#returnValues(input.ReturnValues, ['NONE', 'ALL_OLD']);
    const item = input.Item ?? {};
    const keyValue = item[table.keyName];
    if (keyValue === undefined)
      throw validation(
        `One or more parameter values were invalid: Missing the key ${table.keyName} in the item`,
      );
    const key = this.#keyValue(table, keyValue, 'Item');
    for (const [name, value] of Object.entries(item)) checkValue(value, name);
    const placeholders = new Placeholders(input.ExpressionAttributeNames, input.ExpressionAttributeValues);
    const condition = this.#conditionOf(input, placeholders);
    placeholders.checkAllUsed();
    const stored = table.items.get(key);
    this.#check(input, condition, stored);
    table.items.set(key, copy(item));
    return this.#output(returnValues === 'ALL_OLD' ? stored : undefined);
  }

  #get(input: GetItemCommandInput): GetItemCommandOutput {
    refuseUnsupported('GetItem', input);
    const table = this.#table(input.TableName);
    if (input.ExpressionAttributeNames !== undefined)
      throw validation('ExpressionAttributeNames can only be specified when using expressions');
    const stored = table.items.get(this.#keyOf(table, input.Key));
    return { $metadata: {}, ...(stored === undefined ? {} : { Item: copy(stored) }) };
  }

  #delete(input: DeleteItemCommandInput): DeleteItemCommandOutput {
    refuseUnsupported('DeleteItem', input);
    const table = this.#table(input.TableName);
    const returnValues = this.#returnValues(input.ReturnValues, ['NONE', 'ALL_OLD']);
    const key = this.#keyOf(table, input.Key);
    const placeholders = new Placeholders(input.ExpressionAttributeNames, input.ExpressionAttributeValues);
    const condition = this.#conditionOf(input, placeholders);
    placeholders.checkAllUsed();
    const stored = table.items.get(key);
    this.#check(input, condition, stored);
    table.items.delete(key);
    return this.#output(returnValues === 'ALL_OLD' ? stored : undefined);
  }

  #update(input: UpdateItemCommandInput): UpdateItemCommandOutput {
    refuseUnsupported('UpdateItem', input);
    const table = this.#table(input.TableName);
    const returnValues = this.#returnValues(input.ReturnValues, [
      'NONE',
      'ALL_OLD',
      'ALL_NEW',
      'UPDATED_OLD',
      'UPDATED_NEW',
    ]);
    const key = this.#keyOf(table, input.Key);
    const placeholders = new Placeholders(input.ExpressionAttributeNames, input.ExpressionAttributeValues);
    const actions =
      input.UpdateExpression === undefined ? [] : parseUpdate(input.UpdateExpression, placeholders);
    const condition = this.#conditionOf(input, placeholders);
    placeholders.checkAllUsed();
    const stored = table.items.get(key);
    this.#check(input, condition, stored);
    const before: Item = stored ?? { [table.keyName]: { S: key } };
    const after = applyUpdate(actions, before, table.keyName);
    table.items.set(key, after);
    const updated = (item: Item): Item =>
      Object.fromEntries(
        actions
          .map((a) => a.path.name)
          .filter((n) => item[n] !== undefined)
          .map((n) => [n, item[n]!]),
      );
    switch (returnValues) {
      case 'ALL_OLD':
        return this.#output(stored);
      case 'ALL_NEW':
        return this.#output(after);
      case 'UPDATED_OLD':
        return this.#output(stored === undefined ? undefined : nonEmpty(updated(stored)));
      case 'UPDATED_NEW':
        return this.#output(nonEmpty(updated(after)));
      default:
        return this.#output(undefined);
    }
  }

  #scan(input: ScanCommandInput): ScanCommandOutput {
    refuseUnsupported('Scan', input);
    const table = this.#table(input.TableName);
    const limit = input.Limit;
    if (limit !== undefined && (!Number.isInteger(limit) || limit < 1))
      throw validation(
        `1 validation error detected: Value '${limit}' at 'limit' failed to satisfy constraint: Member must have value greater than or equal to 1`,
      );
    const placeholders = new Placeholders(input.ExpressionAttributeNames, input.ExpressionAttributeValues);
    const filter =
      input.FilterExpression === undefined
        ? undefined
        : parseCondition(input.FilterExpression, 'FilterExpression', placeholders);
    placeholders.checkAllUsed();
    const start =
      input.ExclusiveStartKey === undefined
        ? undefined
        : this.#keyOf(table, input.ExclusiveStartKey, 'ExclusiveStartKey');
    const all = this.#sorted(table).filter(
      (item) => start === undefined || compareBytes(item[table.keyName]!.S!, start) > 0,
    );
    const evaluated = limit === undefined ? all : all.slice(0, limit);
    const items = evaluated.filter((item) => filter === undefined || holds(filter, item)).map(copy);
    const last = evaluated.at(-1);
    return {
      $metadata: {},
      Items: items,
      Count: items.length,
      ScannedCount: evaluated.length,
      ...(limit !== undefined && evaluated.length === limit && last !== undefined
        ? { LastEvaluatedKey: { [table.keyName]: copy(last[table.keyName]!) } }
        : {}),
    };
  }

  #output(attributes: Item | undefined): { $metadata: object; Attributes?: Item } {
    return { $metadata: {}, ...(attributes === undefined ? {} : { Attributes: copy(attributes) }) };
  }
}

function nonEmpty(item: Item): Item | undefined {
  return Object.keys(item).length === 0 ? undefined : item;
}

class ResourceInUse extends DynamoDBServiceException {
  constructor(table: string) {
    super({
      name: 'ResourceInUseException',
      $fault: 'client',
      $metadata: { httpStatusCode: 400 },
      message: `Table already exists: ${table}`,
    });
  }
}
