/*
 * The device side of key rotation (docs/key-lifecycle.md); the TypeScript twin is functions/core/key-messages.ts.
 *
 * Offer: {"v":1,"keyId":u32,"key":base64 of 32 bytes,"oldKeyNotAfter":ISO 8601 with Z or an offset}
 * Ack:   {"v":1,"keyId":u32,"nonce":base64 of 16 bytes,"proof":base64 of 32 bytes}
 * proof = HMAC-SHA256(new key, "blackcloud-key-ack-v1" | 0x00 | keyId u32 BE | nonce)
 *
 * The offer parser is a single pass over untrusted bytes with no recursion (nesting is tracked in a 64-bit
 * stack) and no copies beyond small fixed buffers. It gives the TypeScript reasons in the TypeScript order:
 * too-long, not-json, bad-version (the top level is not an object whose "v" is the number 1), bad-shape.
 * Like JSON.parse, the last of duplicate members wins. Where it is stricter than JSON.parse + zod (documented in
 * docs/device-sdk.md): numbers must be exact decimals (1.00000000000000001 is not 1), and nesting deeper than 64
 * levels is bad-shape.
 */
#include "blackcloud.h"

#include "bc_internal.h"

enum { ST_OK = 0, ST_NOT_JSON = 1, ST_TOO_DEEP = 2 };

typedef struct cursor {
  const uint8_t *p;
  const uint8_t *end;
} cursor;

static void skip_ws(cursor *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static int hex_value(uint8_t ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/*
 * Reads one unit of a string whose opening quote is consumed. Returns 1 with *unit set (bytes >= 0x80 and
 * escapes above 0x7F come back as 0x80: nothing this parser compares is non-ASCII), 0 at the closing quote,
 * -1 if the string is not valid JSON.
 */
static int string_next(cursor *c, uint32_t *unit) {
  uint8_t ch;
  if (c->p >= c->end) return -1;
  ch = *c->p++;
  if (ch == '"') return 0;
  if (ch < 0x20) return -1;
  if (ch != '\\') {
    *unit = ch < 0x80 ? ch : 0x80;
    return 1;
  }
  if (c->p >= c->end) return -1;
  ch = *c->p++;
  if (ch == 'u') {
    uint32_t v = 0;
    int i;
    if (c->end - c->p < 4) return -1;
    for (i = 0; i < 4; i++) {
      int h = hex_value(c->p[i]);
      if (h < 0) return -1;
      v = (v << 4) | (uint32_t)h;
    }
    c->p += 4;
    *unit = v < 0x80 ? v : 0x80;
    return 1;
  }
  {
    /* The other escapes: ESCAPES[i] stands for ESCAPED[i]. */
    static const char ESCAPES[] = "\"\\/bfnrt";
    static const char ESCAPED[] = "\"\\/\b\f\n\r\t";
    int i;
    for (i = 0; ESCAPES[i] != '\0'; i++) {
      if (ch == (uint8_t)ESCAPES[i]) {
        *unit = (uint8_t)ESCAPED[i];
        return 1;
      }
    }
  }
  return -1;
}

/*
 * Reads a string into buf (NUL-terminated, ASCII); returns its length, -1 not JSON, -2 too long/non-ASCII. With
 * `time`, a fraction that starts at offset 19 keeps only its first 3 digits (Date.parse ignores the rest), so any
 * number of fractional digits fits the small buffer.
 */
static int read_string(cursor *c, char *buf, size_t capacity, int time) {
  size_t n = 0;
  int overflow = 0;
  int fraction = 0; /* fractional digits seen, +1; 0 = not in the fraction */
  uint32_t unit = 0;
  int r;
  c->p++; /* the opening quote */
  while ((r = string_next(c, &unit)) == 1) {
    if (fraction > 0) fraction = unit >= '0' && unit <= '9' ? fraction + 1 : 0;
    if (fraction > 4) continue; /* a 4th or later fractional digit */
    if (time && n == 19 && unit == '.') fraction = 1;
    if (unit >= 0x80 || n + 1 >= capacity) {
      overflow = 1;
    } else {
      buf[n++] = (char)unit;
    }
  }
  if (r < 0) return -1;
  buf[n] = '\0';
  return overflow ? -2 : (int)n;
}

typedef struct number {
  int is_u32;
  uint32_t value;
} number;

static int is_digit(uint8_t ch) { return ch >= '0' && ch <= '9'; }

/*
 * Significant digits of a number as they stream by: `value` holds those up to the last non-zero digit (at most
 * 10 of them; `sig` 11 means more), `zeros` the zeros after it, `frac` the digits after the point.
 */
typedef struct digits_state {
  uint64_t value;
  unsigned sig;
  long zeros;
  long frac;
} digits_state;

/* Consumes a run of digits (fraction digits when `fraction`); returns how many. */
static size_t digit_run(cursor *c, digits_state *d, int fraction) {
  size_t n = 0;
  while (c->p < c->end && is_digit(*c->p)) {
    unsigned digit = (unsigned)(*c->p++ - '0');
    n++;
    if (fraction) d->frac++;
    if (digit == 0) {
      if (d->sig > 0) d->zeros++;
    } else if (d->sig + (unsigned long)d->zeros >= 10) {
      d->sig = 11;
      d->zeros = 0;
    } else {
      for (; d->zeros > 0; d->zeros--, d->sig++) d->value *= 10u;
      d->value = d->value * 10u + digit;
      d->sig++;
    }
  }
  return n;
}

/* JSON number grammar; reports whether its exact decimal value is an integer in 0..2^32-1. */
static int read_number(cursor *c, number *out) {
  digits_state d;
  long exponent = 0;
  long shift;
  int negative = 0;
  d.value = 0; /* field by field: an initializer would become a memset call */
  d.sig = 0;
  d.zeros = 0;
  d.frac = 0;
  out->is_u32 = 0;
  out->value = 0;
  if (c->p < c->end && *c->p == '-') {
    negative = 1;
    c->p++;
  }
  if (c->p >= c->end || !is_digit(*c->p)) return ST_NOT_JSON;
  if (*c->p == '0') c->p++; /* a leading 0 is the whole integer part */
  else digit_run(c, &d, 0);
  if (c->p < c->end && *c->p == '.') {
    c->p++;
    if (digit_run(c, &d, 1) == 0) return ST_NOT_JSON;
  }
  if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
    int exp_negative = 0;
    size_t exp_len = 0;
    c->p++;
    if (c->p < c->end && (*c->p == '+' || *c->p == '-')) exp_negative = *c->p++ == '-';
    while (c->p < c->end && is_digit(*c->p)) {
      if (exponent < 100000) exponent = exponent * 10 + (*c->p - '0');
      c->p++;
      exp_len++;
    }
    if (exp_len == 0) return ST_NOT_JSON;
    if (exp_negative) exponent = -exponent;
  }
  /* value = significant digits * 10^shift, the digits without trailing zeros (so shift < 0 is a fraction). */
  if (d.sig == 0) { /* zero (and -0, which JSON.parse + zod accept as 0) */
    out->is_u32 = 1;
    return ST_OK;
  }
  shift = exponent - d.frac + d.zeros;
  if (negative || shift < 0 || (long)d.sig + shift > 10) return ST_OK;
  for (; shift > 0; shift--) d.value *= 10u;
  if (d.value <= 0xFFFFFFFFu) {
    out->is_u32 = 1;
    out->value = (uint32_t)d.value;
  }
  return ST_OK;
}

static int read_literal(cursor *c, const char *word) {
  while (*word != '\0') {
    if (c->p >= c->end || *c->p != (uint8_t)*word) return ST_NOT_JSON;
    c->p++;
    word++;
  }
  return ST_OK;
}

static int skip_string(cursor *c) {
  uint32_t unit;
  int r;
  c->p++;
  while ((r = string_next(c, &unit)) == 1) {
  }
  return r < 0 ? ST_NOT_JSON : ST_OK;
}

/* Skips `"name" ws : ws` inside an object. */
static int skip_member_name(cursor *c) {
  skip_ws(c);
  if (c->p >= c->end || *c->p != '"' || skip_string(c) != ST_OK) return ST_NOT_JSON;
  skip_ws(c);
  if (c->p >= c->end || *c->p != ':') return ST_NOT_JSON;
  c->p++;
  return ST_OK;
}

/* Validates and skips any JSON value, iteratively (bit k of `stack`: 1 = object at depth k+1, 0 = array). */
static int skip_value(cursor *c) {
  uint64_t stack = 0;
  unsigned depth = 0;
  number ignored;
  for (;;) {
    uint8_t ch;
    int rc;
    skip_ws(c);
    if (c->p >= c->end) return ST_NOT_JSON;
    ch = *c->p;
    if (ch == '{' || ch == '[') {
      if (depth == 64) return ST_TOO_DEEP;
      c->p++;
      stack = (stack << 1) | (ch == '{' ? 1u : 0u);
      depth++;
      skip_ws(c);
      if (c->p < c->end && *c->p == (ch == '{' ? '}' : ']')) {
        c->p++;
        stack >>= 1;
        depth--;
      } else {
        if (ch == '{' && skip_member_name(c) != ST_OK) return ST_NOT_JSON;
        continue;
      }
    } else {
      if (ch == '"') rc = skip_string(c);
      else if (ch == '-' || is_digit(ch)) rc = read_number(c, &ignored);
      else if (ch == 't') rc = read_literal(c, "true");
      else if (ch == 'f') rc = read_literal(c, "false");
      else if (ch == 'n') rc = read_literal(c, "null");
      else rc = ST_NOT_JSON;
      if (rc != ST_OK) return rc;
    }
    /* After a value: close containers or move to the next element. */
    for (;;) {
      if (depth == 0) return ST_OK;
      skip_ws(c);
      if (c->p >= c->end) return ST_NOT_JSON;
      ch = *c->p++;
      if (ch == ',') {
        if ((stack & 1u) != 0 && skip_member_name(c) != ST_OK) return ST_NOT_JSON;
        break;
      }
      if (ch != ((stack & 1u) != 0 ? '}' : ']')) return ST_NOT_JSON;
      stack >>= 1;
      depth--;
    }
  }
}

static int b64_value(uint32_t ch) {
  if (ch >= 'A' && ch <= 'Z') return (int)(ch - 'A');
  if (ch >= 'a' && ch <= 'z') return (int)(ch - 'a' + 26);
  if (ch >= '0' && ch <= '9') return (int)(ch - '0' + 52);
  if (ch == '+') return 62;
  if (ch == '/') return 63;
  return -1;
}

/*
 * The offer's key: what /^[A-Za-z0-9+/]*={0,2}$/ then Buffer.from(text, 'base64') accepts as 32 bytes, i.e.
 * exactly 43 alphabet characters then 0..2 '=' (Buffer ignores the unused low bits). Returns 1 valid, 0 invalid
 * (a valid string that is not a key), -1 not JSON.
 */
static int read_key(cursor *c, uint8_t key[32]) {
  uint32_t unit = 0;
  uint32_t bits = 0;
  unsigned nbits = 0;
  size_t chars = 0;
  size_t pad = 0;
  size_t out = 0;
  int valid = 1;
  int r;
  c->p++;
  while ((r = string_next(c, &unit)) == 1) {
    int v = b64_value(unit);
    if (unit == '=') {
      pad++;
    } else if (v < 0 || pad > 0) {
      valid = 0;
    } else {
      chars++;
      if (chars > 43) {
        valid = 0;
        continue;
      }
      bits = (bits << 6) | (uint32_t)v;
      nbits += 6;
      if (nbits >= 8) {
        nbits -= 8;
        key[out++] = (uint8_t)(bits >> nbits);
        bits &= (1u << nbits) - 1u;
      }
    }
  }
  bits = 0;
  if (r < 0) return -1;
  return valid && chars == 43 && pad <= 2 && out == 32;
}

/* ---- ISO 8601 as z.iso.datetime({ offset: true }) accepts it, then Date.parse's value. ---- */

/*
 * Matches s against `pattern`, where 'd' is one ASCII digit and any other character itself; each run of digits
 * is one field, stored in fields[] in order. Returns 1 on a match. s must hold strlen(pattern) characters.
 */
static int match(const char *s, const char *pattern, int *fields) {
  int k = 0;
  fields[0] = 0;
  for (; *pattern != '\0'; pattern++, s++) {
    if (*pattern != 'd') {
      if (*s != *pattern) return 0;
      fields[++k] = 0;
    } else if (*s < '0' || *s > '9') {
      return 0;
    } else {
      fields[k] = fields[k] * 10 + (*s - '0');
    }
  }
  return 1;
}

static int64_t days_from_civil(int y, int m, int d) {
  int era;
  int yoe;
  int doy;
  int doe;
  y -= m <= 2;
  era = (y >= 0 ? y : y - 399) / 400;
  yoe = y - era * 400;
  doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return (int64_t)era * 146097 + (int64_t)doe - 719468;
}

/* YYYY-MM-DDTHH:MM:SS(.d+)?(Z|[+-]HH:MM) with real calendar days (leap years as in zod's date regex). */
static int parse_datetime(const char *s, size_t n, int64_t *ms) {
  static const uint8_t month_days[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int f[6]; /* year, month, day, hour, minute, second */
  int zone[2];
  int millis = 0;
  int offset = 0;
  size_t i = 19;
  if (n < 20 || !match(s, "dddd-dd-ddTdd:dd:dd", f)) return 0;
  if (f[1] < 1 || f[1] > 12 || f[2] < 1 || f[2] > month_days[f[1] - 1]) return 0;
  if (f[1] == 2 && f[2] == 29 && !((f[0] % 4 == 0 && f[0] % 100 != 0) || f[0] % 400 == 0)) return 0;
  if (f[3] > 23 || f[4] > 59 || f[5] > 59) return 0;
  if (s[i] == '.') {
    size_t start = ++i;
    int scale = 100;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++, scale /= 10) millis += (s[i] - '0') * scale;
    if (i == start) return 0;
  }
  if (i + 1 == n && s[i] == 'Z') {
    offset = 0;
  } else if (i + 6 == n && (s[i] == '+' || s[i] == '-') && match(s + i + 1, "dd:dd", zone)) {
    if (zone[0] > 23 || zone[1] > 59) return 0;
    offset = (zone[0] * 60 + zone[1]) * (s[i] == '-' ? -1 : 1);
  } else {
    return 0;
  }
  *ms = days_from_civil(f[0], f[1], f[2]) * 86400000 + (int64_t)f[3] * 3600000 + (int64_t)f[4] * 60000 +
        (int64_t)f[5] * 1000 + millis - (int64_t)offset * 60000;
  return 1;
}

/* Member states: absent, valid, invalid (the last occurrence wins, as with JSON.parse). */
enum { F_ABSENT = 0, F_VALID = 1, F_INVALID = 2 };

/* The offer's members, by index. */
enum { F_V = 0, F_KEY_ID = 1, F_KEY = 2, F_TIME = 3 };
static const char *const FIELDS[4] = {"v", "keyId", "key", "oldKeyNotAfter"};

/* Whether name[0..n) (n < 0: not a usable name) is exactly the NUL-terminated `wanted`. */
static int same(const char *name, int n, const char *wanted) {
  int i = 0;
  while (i < n && wanted[i] != '\0' && name[i] == wanted[i]) i++;
  return n >= 0 && i == n && wanted[i] == '\0';
}

int bc_key_offer_parse(const uint8_t *message, size_t length, bc_key_offer *offer) {
  cursor c;
  char name[16];
  char text[48];
  uint8_t key[32];
  int state[4]; /* per FIELDS entry: F_ABSENT, F_VALID or F_INVALID */
  int unknown = 0;
  uint32_t key_id = 0;
  int64_t not_after = 0;
  int rc = BC_ERR_OFFER_NOT_JSON;
  if (message == NULL || offer == NULL) return BC_ERR_ARGUMENT;
  if (length > BC_MAX_KEY_MESSAGE_BYTES) return BC_ERR_OFFER_TOO_LONG;
  state[F_V] = state[F_KEY_ID] = state[F_KEY] = state[F_TIME] = F_ABSENT;
  c.p = message;
  c.end = message + length;
  skip_ws(&c);
  if (c.p >= c.end) return BC_ERR_OFFER_NOT_JSON;
  if (*c.p != '{') { /* valid JSON that is not an object has no "v" */
    int st = skip_value(&c);
    if (st == ST_TOO_DEEP) return BC_ERR_OFFER_BAD_VERSION;
    skip_ws(&c);
    return st == ST_OK && c.p == c.end ? BC_ERR_OFFER_BAD_VERSION : BC_ERR_OFFER_NOT_JSON;
  }
  c.p++;
  skip_ws(&c);
  if (c.p < c.end && *c.p == '}') {
    c.p++;
  } else {
    for (;;) {
      int name_len;
      int field;
      skip_ws(&c);
      if (c.p >= c.end || *c.p != '"') goto done;
      name_len = read_string(&c, name, sizeof name, 0);
      if (name_len == -1) goto done;
      skip_ws(&c);
      if (c.p >= c.end || *c.p != ':') goto done;
      c.p++;
      skip_ws(&c);
      if (c.p >= c.end) goto done;
      for (field = F_TIME; field >= 0; field--)
        if (same(name, name_len, FIELDS[field])) break; /* -1: an unknown member */
      if (field < 0) {
        int st = skip_value(&c);
        unknown = 1;
        if (st == ST_NOT_JSON) goto done;
        if (st == ST_TOO_DEEP) {
          rc = BC_ERR_OFFER_BAD_SHAPE;
          goto done;
        }
      } else if (field <= F_KEY_ID && (*c.p == '-' || is_digit(*c.p))) {
        number num;
        if (read_number(&c, &num) != ST_OK) goto done;
        state[field] = num.is_u32 && (field == F_KEY_ID || num.value == 1) ? F_VALID : F_INVALID;
        if (field == F_KEY_ID) key_id = num.value;
      } else if (field == F_KEY && *c.p == '"') {
        int r = read_key(&c, key);
        if (r < 0) goto done;
        state[F_KEY] = r ? F_VALID : F_INVALID;
      } else if (field == F_TIME && *c.p == '"') {
        int len = read_string(&c, text, sizeof text, 1);
        if (len == -1) goto done;
        state[F_TIME] = len >= 0 && parse_datetime(text, (size_t)len, &not_after) ? F_VALID : F_INVALID;
      } else {
        int st = skip_value(&c);
        if (st == ST_NOT_JSON) goto done;
        if (st == ST_TOO_DEEP) {
          rc = field == F_V ? BC_ERR_OFFER_BAD_VERSION : BC_ERR_OFFER_BAD_SHAPE;
          goto done;
        }
        state[field] = F_INVALID; /* a known member of the wrong type */
      }
      skip_ws(&c);
      if (c.p >= c.end) goto done;
      if (*c.p == ',') {
        c.p++;
        continue;
      }
      if (*c.p != '}') goto done;
      c.p++;
      break;
    }
  }
  skip_ws(&c);
  if (c.p != c.end) goto done;
  if (state[F_V] != F_VALID) {
    rc = BC_ERR_OFFER_BAD_VERSION;
  } else if (unknown || state[F_KEY_ID] != F_VALID || state[F_KEY] != F_VALID || state[F_TIME] != F_VALID) {
    rc = BC_ERR_OFFER_BAD_SHAPE;
  } else {
    size_t i;
    offer->key_id = key_id;
    for (i = 0; i < 32; i++) offer->key[i] = key[i];
    offer->old_key_not_after = not_after;
    rc = BC_OK;
  }
done:
  bc_wipe(key, sizeof key);
  return rc;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_encode(const uint8_t *in, size_t n, char *out) {
  size_t i;
  size_t o = 0;
  for (i = 0; i + 2 < n; i += 3) {
    uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) | in[i + 2];
    out[o++] = B64[(v >> 18) & 63];
    out[o++] = B64[(v >> 12) & 63];
    out[o++] = B64[(v >> 6) & 63];
    out[o++] = B64[v & 63];
  }
  if (n - i == 1) {
    uint32_t v = (uint32_t)in[i] << 16;
    out[o++] = B64[(v >> 18) & 63];
    out[o++] = B64[(v >> 12) & 63];
    out[o++] = '=';
    out[o++] = '=';
  } else if (n - i == 2) {
    uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8);
    out[o++] = B64[(v >> 18) & 63];
    out[o++] = B64[(v >> 12) & 63];
    out[o++] = B64[(v >> 6) & 63];
    out[o++] = '=';
  }
  return o;
}

static const char ACK_LABEL[] = "blackcloud-key-ack-v1"; /* 21 characters, then the 0x00 */
#define ACK_LABEL_LENGTH 22u

int bc_ack_proof(const bc_crypto *crypto, const uint8_t key[32], uint32_t key_id, const uint8_t nonce[16],
                 uint8_t proof[32]) {
  uint8_t message[ACK_LABEL_LENGTH + 4u + BC_ACK_NONCE_LENGTH];
  size_t i;
  int rc;
  if (crypto == NULL || crypto->hmac_sha256 == NULL || key == NULL || nonce == NULL || proof == NULL)
    return BC_ERR_ARGUMENT;
  for (i = 0; i < ACK_LABEL_LENGTH; i++) message[i] = (uint8_t)ACK_LABEL[i]; /* includes the NUL */
  bc_put_u32(message + ACK_LABEL_LENGTH, key_id);
  for (i = 0; i < BC_ACK_NONCE_LENGTH; i++) message[ACK_LABEL_LENGTH + 4u + i] = nonce[i];
  rc = crypto->hmac_sha256(crypto->ctx, key, BC_KEY_LENGTH, message, sizeof message, proof);
  return rc == 0 ? BC_OK : BC_ERR_CRYPTO;
}

static size_t append(char *out, size_t o, const char *text) {
  while (*text != '\0') out[o++] = *text++;
  return o;
}

int bc_key_ack_build(const bc_crypto *crypto, const uint8_t key[32], uint32_t key_id, const uint8_t *nonce,
                     bc_random_fn random, void *random_ctx, char *out, size_t capacity) {
  uint8_t fresh[BC_ACK_NONCE_LENGTH];
  uint8_t proof[BC_ACK_PROOF_LENGTH];
  char digits_buf[10];
  size_t nd = 0;
  size_t o = 0;
  size_t total;
  uint32_t rest = key_id;
  int rc;
  if (out == NULL || key == NULL || (nonce == NULL && random == NULL)) return BC_ERR_ARGUMENT;
  do {
    digits_buf[nd++] = (char)('0' + rest % 10u);
    rest /= 10u;
  } while (rest != 0);
  /* {"v":1,"keyId": N ,"nonce":" 24 ","proof":" 44 "} */
  total = 15u + nd + 10u + 24u + 11u + 44u + 2u;
  if (capacity < total) return BC_ERR_BUFFER;
  if (nonce == NULL) {
    if (random(random_ctx, fresh, sizeof fresh) != 0) return BC_ERR_RANDOM;
    nonce = fresh;
  }
  rc = bc_ack_proof(crypto, key, key_id, nonce, proof);
  if (rc != BC_OK) return rc;
  o = append(out, o, "{\"v\":1,\"keyId\":");
  while (nd > 0) out[o++] = digits_buf[--nd];
  o = append(out, o, ",\"nonce\":\"");
  o += b64_encode(nonce, BC_ACK_NONCE_LENGTH, out + o);
  o = append(out, o, "\",\"proof\":\"");
  o += b64_encode(proof, BC_ACK_PROOF_LENGTH, out + o);
  o = append(out, o, "\"}");
  bc_wipe(proof, sizeof proof);
  return (int)o;
}
