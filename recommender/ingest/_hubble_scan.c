/*
 * _hubble_scan: the hot loop of the Hubble reader in C (see recommender/ingest/hubble.py).
 *
 * Most Hubble events are replies or further events (other packets, other observation points)
 * of a connection already kept. Scanner.load() checks every line of a chunk against the exact
 * subset of JSON that msgspec would decode into hubble._Line *to the same values*, keeping
 * only the fields that settle such events: flow.is_reply, whether flow.l7 is set, flow.IP,
 * the TCP/UDP ports, the event time and whether the verdict may override a kept row.
 * Scanner.run() then walks the lines in order and settles replies and duplicates itself
 * (reading and updating the reader's own dict of recently seen connections), and stops at the
 * first line that Python must handle: a new connection, an L7 event, a DROPPED/AUDIT event,
 * anything unusual.
 *
 * Correctness never depends on this file: a line the scanner is not sure about (an escape or a
 * byte outside printable ASCII in a string, a duplicated known key, an unexpected type, a time
 * in another form, deep nesting, invalid JSON) is "unsure" and goes to msgspec in Python,
 * which then decides exactly as it does without the extension.
 *
 * Scanner.feed() splits blocks into lines, deals them out to parallel workers exactly as
 * hubble.share_lines() (a regular expression) does and scans its own in place; columns() turns
 * the batch builder's rows into columns and arrow_buffers() columns into Arrow buffers;
 * Scanner.run() with a context also adds the rows of plain new connections and L7 requests
 * (see add_row, settle_l7), and keeps the waiting rows' connection outcome as the reader's
 * _answered and _forward do (see answered, forward). A TCP line whose flags are impossible
 * (hubble.tcp_flag_bits) is unsure: Python counts it in the ledger.
 */
#define PY_SSIZE_T_CLEAN
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <Python.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define MAX_DEPTH 48
#define UNSURE 1

typedef struct {
    const char *p;
    Py_ssize_t n;
} span_t;

/* What one line holds (for lines the scanner is sure about). */
typedef struct {
    uint8_t unsure;
    uint8_t has_flow;
    int8_t is_reply; /* -1: absent or null */
    uint8_t has_l7;
    uint8_t has_ip;
    uint8_t has_l4;
    uint8_t has_tcp, has_udp;
    uint8_t has_flow_time, has_line_time;
    uint8_t overriding; /* verdict is DROPPED, AUDIT or a number: Python decides */
    uint8_t forwarded;  /* verdict is "FORWARDED" */
    uint8_t l7_response; /* l7.type is "RESPONSE" or 2 */
    uint8_t has_svc;    /* destination_service is an object */
    uint8_t dir_kind, point_kind; /* 0 absent, 1 string (span), 2 integer (value) */
    long long dir_int, point_int;
    Py_ssize_t n_names; /* items of destination_names */
    span_t src, dst;
    /* For rows built here (Scanner.run with a context): the raw endpoint objects (empty when
     * absent), node names, direction, observation point, destination service. */
    span_t src_raw, dst_raw, flow_node, line_node, dir, point, svc_name, svc_ns;
    long long tcp_sport, tcp_dport, udp_sport, udp_dport;
    long long flow_time, line_time;
    /* flow.l7: which of http, dns and kafka are objects; the http and dns fields. */
    uint8_t has_http, has_dns, has_kafka;
    long long http_code;
    span_t http_method, http_url, dns_query;
    /* l4.TCP.flags: an object was there; SYN, ACK, FIN and RST are true. */
    uint8_t has_flags, fl_syn, fl_ack, fl_fin, fl_rst;
} rec_t;

/* ---------------------------------------------------------------------------------------- */
/* The schema: which keys of which object are typed by hubble._Line and what they hold.    */
/* ---------------------------------------------------------------------------------------- */

enum kind {
    K_STR,        /* str */
    K_STR_INT,    /* str | int */
    K_INT,        /* int */
    K_BOOL,       /* bool */
    K_OPT_BOOL,   /* bool | None */
    K_OPT_TIME,   /* datetime | None */
    K_RAW,        /* any JSON value */
    K_LIST_STR,   /* list[str] */
    K_LIST_OBJ,   /* list[struct] */
    K_OPT_OBJ,    /* struct | None */
    K_OPT_DICT,   /* dict[str, Any] | None */
};

/* What to remember of a field's value. */
enum slot {
    S_NONE,
    S_FLOW,
    S_FLOW_TIME,
    S_LINE_TIME,
    S_VERDICT,
    S_IP,
    S_IP_SRC,
    S_IP_DST,
    S_L4,
    S_TCP,
    S_UDP,
    S_TCP_SPORT,
    S_TCP_DPORT,
    S_UDP_SPORT,
    S_UDP_DPORT,
    S_L7,
    S_IS_REPLY,
    S_SRC_RAW,
    S_DST_RAW,
    S_FLOW_NODE,
    S_LINE_NODE,
    S_DIRECTION,
    S_POINT,
    S_NAMES,
    S_SVC,
    S_SVC_NAME,
    S_SVC_NS,
    S_L7_TYPE,
    S_HTTP,
    S_HTTP_CODE,
    S_HTTP_METHOD,
    S_HTTP_URL,
    S_DNS,
    S_DNS_QUERY,
    S_KAFKA,
    S_TCP_FLAGS,
    S_FL_SYN,
    S_FL_ACK,
    S_FL_FIN,
    S_FL_RST,
};

struct schema;
typedef struct {
    const char *name;
    Py_ssize_t len;
    enum kind kind;
    enum slot slot;
    const struct schema *sub;
} field_t;

typedef struct schema {
    int n;
    const field_t *fields;
    uint32_t lengths; /* bit L set when a field's name has L characters (set at import) */
} schema_t;

#define F(name, kind, slot, sub) {name, sizeof(name) - 1, kind, slot, sub}

static const field_t flags_fields[] = {
    F("SYN", K_BOOL, S_NONE, NULL),
    F("ACK", K_BOOL, S_NONE, NULL),
    F("FIN", K_BOOL, S_NONE, NULL),
    F("RST", K_BOOL, S_NONE, NULL),
};
static schema_t flags_schema = {4, flags_fields};
static const field_t tcp_flags_fields[] = {
    F("SYN", K_BOOL, S_FL_SYN, NULL),
    F("ACK", K_BOOL, S_FL_ACK, NULL),
    F("FIN", K_BOOL, S_FL_FIN, NULL),
    F("RST", K_BOOL, S_FL_RST, NULL),
};
static schema_t tcp_flags_schema = {4, tcp_flags_fields};

static const field_t tcp_fields[] = {
    F("source_port", K_INT, S_TCP_SPORT, NULL),
    F("destination_port", K_INT, S_TCP_DPORT, NULL),
    F("flags", K_OPT_OBJ, S_TCP_FLAGS, &tcp_flags_schema),
};
static schema_t tcp_schema = {3, tcp_fields};
static const field_t udp_fields[] = {
    F("source_port", K_INT, S_UDP_SPORT, NULL),
    F("destination_port", K_INT, S_UDP_DPORT, NULL),
    F("flags", K_OPT_OBJ, S_NONE, &flags_schema),
};
static schema_t udp_schema = {3, udp_fields};
static const field_t ports_fields[] = {
    F("source_port", K_INT, S_NONE, NULL),
    F("destination_port", K_INT, S_NONE, NULL),
    F("flags", K_OPT_OBJ, S_NONE, &flags_schema),
};
static schema_t ports_schema = {3, ports_fields};

static const field_t icmp_fields[] = {
    F("type", K_INT, S_NONE, NULL),
    F("code", K_INT, S_NONE, NULL),
};
static schema_t icmp_schema = {2, icmp_fields};

static const field_t l4_fields[] = {
    F("TCP", K_OPT_OBJ, S_TCP, &tcp_schema),
    F("UDP", K_OPT_OBJ, S_UDP, &udp_schema),
    F("SCTP", K_OPT_OBJ, S_NONE, &ports_schema),
    F("ICMPv4", K_OPT_OBJ, S_NONE, &icmp_schema),
    F("ICMPv6", K_OPT_OBJ, S_NONE, &icmp_schema),
};
static schema_t l4_schema = {5, l4_fields};

static const field_t flow_ip_fields[] = {
    F("source", K_STR, S_IP_SRC, NULL),
    F("destination", K_STR, S_IP_DST, NULL),
};
static schema_t flow_ip_schema = {2, flow_ip_fields};
static const field_t ip_fields[] = {
    F("source", K_STR, S_NONE, NULL),
    F("destination", K_STR, S_NONE, NULL),
};
static schema_t ip_schema = {2, ip_fields};

static const field_t service_fields[] = {
    F("name", K_STR, S_SVC_NAME, NULL),
    F("namespace", K_STR, S_SVC_NS, NULL),
};
static schema_t service_schema = {2, service_fields};
static const field_t http_fields[] = {
    F("code", K_INT, S_HTTP_CODE, NULL),
    F("method", K_STR, S_HTTP_METHOD, NULL),
    F("url", K_STR, S_HTTP_URL, NULL),
};
static schema_t http_schema = {3, http_fields};
static const field_t dns_fields[] = {
    F("query", K_STR, S_DNS_QUERY, NULL),
};
static schema_t dns_schema = {1, dns_fields};
static const field_t l7_fields[] = {
    F("type", K_STR_INT, S_L7_TYPE, NULL),
    F("http", K_OPT_OBJ, S_HTTP, &http_schema),
    F("dns", K_OPT_OBJ, S_DNS, &dns_schema),
    F("kafka", K_OPT_DICT, S_KAFKA, NULL),
};
static schema_t l7_schema = {4, l7_fields};

static const field_t flow_fields[] = {
    F("time", K_OPT_TIME, S_FLOW_TIME, NULL),
    F("verdict", K_STR_INT, S_VERDICT, NULL),
    F("drop_reason_desc", K_STR_INT, S_NONE, NULL),
    F("IP", K_OPT_OBJ, S_IP, &flow_ip_schema),
    F("l4", K_OPT_OBJ, S_L4, &l4_schema),
    F("source", K_RAW, S_SRC_RAW, NULL),
    F("destination", K_RAW, S_DST_RAW, NULL),
    F("Type", K_STR_INT, S_NONE, NULL),
    F("node_name", K_STR, S_FLOW_NODE, NULL),
    F("destination_names", K_LIST_STR, S_NAMES, NULL),
    F("l7", K_OPT_OBJ, S_L7, &l7_schema),
    F("is_reply", K_OPT_BOOL, S_IS_REPLY, NULL),
    F("reply", K_BOOL, S_NONE, NULL),
    F("traffic_direction", K_STR_INT, S_DIRECTION, NULL),
    F("trace_observation_point", K_STR_INT, S_POINT, NULL),
    F("destination_service", K_OPT_OBJ, S_SVC, &service_schema),
};
static schema_t flow_schema = {16, flow_fields};

static const field_t line_fields[] = {
    F("flow", K_OPT_OBJ, S_FLOW, &flow_schema),
    F("node_name", K_STR, S_LINE_NODE, NULL),
    F("time", K_OPT_TIME, S_LINE_TIME, NULL),
    F("IP", K_OPT_OBJ, S_NONE, &ip_schema),
    F("verdict", K_STR_INT, S_NONE, NULL),
};
static schema_t line_schema = {5, line_fields};

/* ---------------------------------------------------------------------------------------- */
/* The JSON walker                                                                           */
/* ---------------------------------------------------------------------------------------- */

typedef struct {
    const char *end;
    rec_t *rec;
} ctx_t;

static inline const char *
skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

/* A string starting at p (the opening quote): printable ASCII without escapes, or NULL. */
static inline const char *
scan_string(const char *p, const char *end, span_t *out)
{
    const char *s = ++p;
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"');
    const __m128i slash = _mm_set1_epi8('\\');
    const __m128i space = _mm_set1_epi8(0x20);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        /* signed bytes: those >= 0x80 are negative, so "below 0x20" catches both kinds */
        __m128i bad = _mm_or_si128(_mm_cmpeq_epi8(v, slash), _mm_cmpgt_epi8(space, v));
        int qm = _mm_movemask_epi8(_mm_cmpeq_epi8(v, quote));
        int bm = _mm_movemask_epi8(bad);
        if (qm | bm) {
            int q = qm ? __builtin_ctz(qm) : 16;
            int b = bm ? __builtin_ctz(bm) : 16;
            if (b < q)
                return NULL;
            out->p = s;
            out->n = (p + q) - s;
            return p + q + 1;
        }
        p += 16;
    }
#endif
    for (; p < end; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            out->p = s;
            out->n = p - s;
            return p + 1;
        }
        if (c == '\\' || c < 0x20 || c >= 0x80)
            return NULL;
    }
    return NULL;
}

/* A JSON number; *is_int and *value (when it has at most 18 digits) for integers. */
static inline const char *
scan_number(const char *p, const char *end, int *is_int, long long *value)
{
    int neg = 0, digits = 0;
    long long v = 0;
    *is_int = 1;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= end)
        return NULL;
    if (*p == '0') {
        p++;
        digits = 1;
    }
    else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9') {
            if (digits < 18)
                v = v * 10 + (*p - '0');
            digits++;
            p++;
        }
    }
    else
        return NULL;
    if (p < end && *p == '.') {
        *is_int = 0;
        p++;
        if (p >= end || *p < '0' || *p > '9')
            return NULL;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        *is_int = 0;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9')
            return NULL;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (*is_int && digits > 18)
        *is_int = 2; /* an integer too long to hold here */
    *value = neg ? -v : v;
    return p;
}

static const char *skip_value(const char *p, const char *end, int depth);

static const char *
skip_object(const char *p, const char *end, int depth)
{
    span_t key;
    if (depth > MAX_DEPTH)
        return NULL;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}')
        return p + 1;
    for (;;) {
        if (p >= end || *p != '"' || !(p = scan_string(p, end, &key)))
            return NULL;
        p = skip_ws(p, end);
        if (p >= end || *p != ':')
            return NULL;
        p = skip_ws(p + 1, end);
        if (!(p = skip_value(p, end, depth + 1)))
            return NULL;
        p = skip_ws(p, end);
        if (p >= end)
            return NULL;
        if (*p == '}')
            return p + 1;
        if (*p != ',')
            return NULL;
        p = skip_ws(p + 1, end);
    }
}

static const char *
skip_array(const char *p, const char *end, int depth)
{
    if (depth > MAX_DEPTH)
        return NULL;
    p = skip_ws(p + 1, end);
    if (p < end && *p == ']')
        return p + 1;
    for (;;) {
        if (!(p = skip_value(p, end, depth + 1)))
            return NULL;
        p = skip_ws(p, end);
        if (p >= end)
            return NULL;
        if (*p == ']')
            return p + 1;
        if (*p != ',')
            return NULL;
        p = skip_ws(p + 1, end);
    }
}

static inline const char *
literal(const char *p, const char *end, const char *word, Py_ssize_t n)
{
    if (end - p < n || memcmp(p, word, n) != 0)
        return NULL;
    return p + n;
}

static const char *
skip_value(const char *p, const char *end, int depth)
{
    span_t s;
    int is_int;
    long long v;
    if (p >= end)
        return NULL;
    switch (*p) {
    case '"':
        return scan_string(p, end, &s);
    case '{':
        return skip_object(p, end, depth);
    case '[':
        return skip_array(p, end, depth);
    case 't':
        return literal(p, end, "true", 4);
    case 'f':
        return literal(p, end, "false", 5);
    case 'n':
        return literal(p, end, "null", 4);
    default:
        return scan_number(p, end, &is_int, &v);
    }
}

/* Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm). */
static long long
days_from_civil(long long y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const long long era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}

static inline int
digits(const char *p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 1;
}

/* YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z as microseconds since the epoch, rounded as msgspec rounds
 * (half up on the seventh digit); 0 when the text has any other form. */
static int
parse_time(span_t s, long long *micros)
{
    const char *p = s.p;
    int year, month, day, hour, minute, second, frac = 0, fdigits = 0;
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (s.n < 20 || s.n > 30)
        return 0;
    if (!digits(p, 4, &year) || p[4] != '-' || !digits(p + 5, 2, &month) || p[7] != '-' ||
        !digits(p + 8, 2, &day) || p[10] != 'T' || !digits(p + 11, 2, &hour) ||
        p[13] != ':' || !digits(p + 14, 2, &minute) || p[16] != ':' ||
        !digits(p + 17, 2, &second))
        return 0;
    const char *q = p + 19, *end = p + s.n;
    if (q < end && *q == '.') {
        q++;
        while (q < end && *q >= '0' && *q <= '9') {
            if (fdigits < 7)
                frac = frac * 10 + (*q - '0');
            fdigits++;
            q++;
        }
        if (fdigits < 1 || fdigits > 9)
            return 0;
    }
    if (q + 1 != end || *q != 'Z')
        return 0;
    if (year < 1900 || year > 2200 || month < 1 || month > 12 || hour > 23 || minute > 59 ||
        second > 59 || day < 1)
        return 0;
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (day > mdays[month - 1] + (month == 2 && leap))
        return 0;
    long long us;
    if (fdigits <= 6) {
        us = frac;
        for (int i = fdigits; i < 6; i++)
            us *= 10;
    }
    else {
        us = frac / 10 + (frac % 10 >= 5);
    }
    long long days = days_from_civil(year, (unsigned)month, (unsigned)day);
    *micros = ((days * 86400 + hour * 3600 + minute * 60 + second) * 1000000LL) + us;
    return 1;
}

static const char *parse_object(ctx_t *c, const char *p, const schema_t *sch, int depth);

static void
store_int(ctx_t *c, enum slot slot, long long v)
{
    rec_t *r = c->rec;
    switch (slot) {
    case S_TCP_SPORT:
        r->tcp_sport = v;
        break;
    case S_TCP_DPORT:
        r->tcp_dport = v;
        break;
    case S_UDP_SPORT:
        r->udp_sport = v;
        break;
    case S_UDP_DPORT:
        r->udp_dport = v;
        break;
    case S_DIRECTION:
        r->dir_kind = 2;
        r->dir_int = v;
        break;
    case S_POINT:
        r->point_kind = 2;
        r->point_int = v;
        break;
    case S_L7_TYPE:
        r->l7_response = v == 2;
        break;
    case S_HTTP_CODE:
        r->http_code = v;
        break;
    default:
        break;
    }
}

/* One typed value; NULL when unsure. */
static const char *
parse_field(ctx_t *c, const char *p, const field_t *f, int depth)
{
    const char *end = c->end;
    rec_t *r = c->rec;
    span_t s;
    int is_int;
    long long v;
    if (p >= end)
        return NULL;
    switch (f->kind) {
    case K_STR:
        if (*p != '"' || !(p = scan_string(p, end, &s)))
            return NULL;
        switch (f->slot) {
        case S_IP_SRC:
            r->src = s;
            break;
        case S_IP_DST:
            r->dst = s;
            break;
        case S_FLOW_NODE:
            r->flow_node = s;
            break;
        case S_LINE_NODE:
            r->line_node = s;
            break;
        case S_SVC_NAME:
            r->svc_name = s;
            break;
        case S_SVC_NS:
            r->svc_ns = s;
            break;
        case S_HTTP_METHOD:
            r->http_method = s;
            break;
        case S_HTTP_URL:
            r->http_url = s;
            break;
        case S_DNS_QUERY:
            r->dns_query = s;
            break;
        default:
            break;
        }
        return p;
    case K_STR_INT:
        if (*p == '"') {
            if (!(p = scan_string(p, end, &s)))
                return NULL;
            if (f->slot == S_VERDICT &&
                ((s.n == 7 && memcmp(s.p, "DROPPED", 7) == 0) ||
                 (s.n == 5 && memcmp(s.p, "AUDIT", 5) == 0)))
                r->overriding = 1;
            if (f->slot == S_VERDICT)
                r->forwarded = s.n == 9 && memcmp(s.p, "FORWARDED", 9) == 0;
            else if (f->slot == S_DIRECTION) {
                r->dir_kind = 1;
                r->dir = s;
            }
            else if (f->slot == S_POINT) {
                r->point_kind = 1;
                r->point = s;
            }
            else if (f->slot == S_L7_TYPE)
                r->l7_response = s.n == 8 && memcmp(s.p, "RESPONSE", 8) == 0;
            return p;
        }
        /* an integer */
        /* fall through */
    case K_INT:
        if (!(p = scan_number(p, end, &is_int, &v)) || is_int != 1)
            return NULL;
        if (f->kind == K_STR_INT && f->slot == S_VERDICT) {
            r->overriding = 1;
            r->forwarded = 0;
        }
        store_int(c, f->slot, v);
        return p;
    case K_BOOL:
    case K_OPT_BOOL:
        if (*p == 't') {
            switch (f->slot) {
            case S_IS_REPLY:
                r->is_reply = 1;
                break;
            case S_FL_SYN:
                r->fl_syn = 1;
                break;
            case S_FL_ACK:
                r->fl_ack = 1;
                break;
            case S_FL_FIN:
                r->fl_fin = 1;
                break;
            case S_FL_RST:
                r->fl_rst = 1;
                break;
            default:
                break;
            }
            return literal(p, end, "true", 4);
        }
        if (*p == 'f') {
            if (f->slot == S_IS_REPLY)
                r->is_reply = 0;
            return literal(p, end, "false", 5);
        }
        if (*p == 'n' && f->kind == K_OPT_BOOL) {
            if (f->slot == S_IS_REPLY)
                r->is_reply = -1;
            return literal(p, end, "null", 4);
        }
        return NULL;
    case K_OPT_TIME:
        if (*p == 'n')
            return literal(p, end, "null", 4);
        if (*p != '"' || !(p = scan_string(p, end, &s)) || !parse_time(s, &v))
            return NULL;
        if (f->slot == S_FLOW_TIME) {
            r->has_flow_time = 1;
            r->flow_time = v;
        }
        else if (f->slot == S_LINE_TIME) {
            r->has_line_time = 1;
            r->line_time = v;
        }
        return p;
    case K_RAW: {
        const char *start = p;
        if (!(p = skip_value(p, end, depth)))
            return NULL;
        if (f->slot == S_SRC_RAW) {
            r->src_raw.p = start;
            r->src_raw.n = p - start;
        }
        else if (f->slot == S_DST_RAW) {
            r->dst_raw.p = start;
            r->dst_raw.n = p - start;
        }
        return p;
    }
    case K_LIST_STR:
        if (*p != '[')
            return NULL;
        p = skip_ws(p + 1, end);
        if (p < end && *p == ']')
            return p + 1;
        for (;;) {
            if (p >= end || *p != '"' || !(p = scan_string(p, end, &s)))
                return NULL;
            if (f->slot == S_NAMES)
                r->n_names++;
            p = skip_ws(p, end);
            if (p >= end)
                return NULL;
            if (*p == ']')
                return p + 1;
            if (*p != ',')
                return NULL;
            p = skip_ws(p + 1, end);
        }
    case K_LIST_OBJ:
        return NULL; /* not used */
    case K_OPT_OBJ:
        if (*p == 'n') {
            return literal(p, end, "null", 4);
        }
        if (*p != '{')
            return NULL;
        switch (f->slot) {
        case S_FLOW:
            r->has_flow = 1;
            break;
        case S_IP:
            r->has_ip = 1;
            break;
        case S_L4:
            r->has_l4 = 1;
            break;
        case S_TCP:
            r->has_tcp = 1;
            break;
        case S_UDP:
            r->has_udp = 1;
            break;
        case S_L7:
            r->has_l7 = 1;
            break;
        case S_SVC:
            r->has_svc = 1;
            break;
        case S_HTTP:
            r->has_http = 1;
            break;
        case S_DNS:
            r->has_dns = 1;
            break;
        case S_TCP_FLAGS:
            r->has_flags = 1;
            break;
        default:
            break;
        }
        return parse_object(c, p, f->sub, depth);
    case K_OPT_DICT:
        if (*p == 'n')
            return literal(p, end, "null", 4);
        if (*p != '{')
            return NULL;
        if (f->slot == S_KAFKA)
            r->has_kafka = 1;
        return skip_object(p, end, depth);
    }
    return NULL;
}

static const char *
parse_object(ctx_t *c, const char *p, const schema_t *sch, int depth)
{
    const char *end = c->end;
    span_t key;
    uint32_t seen = 0;
    if (depth > MAX_DEPTH)
        return NULL;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}')
        return p + 1;
    for (;;) {
        if (p >= end || *p != '"' || !(p = scan_string(p, end, &key)))
            return NULL;
        p = skip_ws(p, end);
        if (p >= end || *p != ':')
            return NULL;
        p = skip_ws(p + 1, end);
        const field_t *f = NULL;
        int i = 0;
        /* Most keys are not typed: their length alone rules them out. */
        if (key.n >= 32 || (sch->lengths >> key.n) & 1u) {
            for (; i < sch->n; i++) {
                const field_t *g = &sch->fields[i];
                if (g->len == key.n && g->name[0] == key.p[0] &&
                    memcmp(g->name, key.p, key.n) == 0) {
                    f = g;
                    break;
                }
            }
        }
        if (f != NULL) {
            if (seen & (1u << i))
                return NULL; /* a repeated key: msgspec keeps the last; leave it to msgspec */
            seen |= 1u << i;
            p = parse_field(c, p, f, depth + 1);
        }
        else
            p = skip_value(p, end, depth + 1);
        if (!p)
            return NULL;
        p = skip_ws(p, end);
        if (p >= end)
            return NULL;
        if (*p == '}')
            return p + 1;
        if (*p != ',')
            return NULL;
        p = skip_ws(p + 1, end);
    }
}

/* Fill *r from one line; r->unsure when msgspec must decide. */
static void
scan_line(const char *p, Py_ssize_t n, rec_t *r)
{
    ctx_t c;
    memset(r, 0, sizeof(*r));
    r->is_reply = -1;
    c.end = p + n;
    c.rec = r;
    p = skip_ws(p, c.end);
    if (p >= c.end || *p != '{' || !(p = parse_object(&c, p, &line_schema, 0))) {
        r->unsure = 1;
        return;
    }
    if (skip_ws(p, c.end) != c.end)
        r->unsure = 1;
    /* Flags no TCP stack sends (hubble.tcp_flag_bits): Python counts them in the ledger. */
    if (r->has_tcp && r->has_flags &&
        (!(r->fl_syn || r->fl_ack || r->fl_fin || r->fl_rst) ||
         (r->fl_syn && (r->fl_rst || r->fl_fin)) || (r->fl_fin && !r->fl_ack)))
        r->unsure = 1;
}

/* ---------------------------------------------------------------------------------------- */
/* The Scanner type                                                                          */
/* ---------------------------------------------------------------------------------------- */

#define STR_CACHE 4096

typedef struct {
    PyObject_HEAD
    PyObject *lines; /* the list of bytes loaded last (the spans point into it) */
    rec_t *recs;
    Py_ssize_t n, cap;
    /* Lines fed from a block (Scanner.feed): the block's buffer and the line joined across
     * blocks, which the spans point into, and each line's span. */
    Py_buffer held;
    int holding;
    PyObject *joined;
    span_t *spans;
    PyObject *cache[STR_CACHE];
} Scanner;

static PyObject *TCP_STR, *UDP_STR, *EMPTY_STR;
static PyObject *WORKLOAD_STR, *ALLOWED_STR, *HUBBLE_STR, *INGRESS_STR, *EGRESS_STR, *POP_STR;
static PyObject *ESTABLISHED_STR, *FAILED_STR, *UNKNOWN_STR;

static void
Scanner_dealloc(Scanner *self)
{
    Py_XDECREF(self->lines);
    if (self->holding)
        PyBuffer_Release(&self->held);
    Py_XDECREF(self->joined);
    PyMem_Free(self->spans);
    for (int i = 0; i < STR_CACHE; i++)
        Py_XDECREF(self->cache[i]);
    PyMem_Free(self->recs);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The str of an ASCII span, from a small cache (addresses repeat on every line). */
static PyObject *
cached_str(Scanner *self, span_t s)
{
    if (s.n == 0) {
        Py_INCREF(EMPTY_STR);
        return EMPTY_STR;
    }
    uint32_t h = 2166136261u;
    for (Py_ssize_t i = 0; i < s.n; i++)
        h = (h ^ (unsigned char)s.p[i]) * 16777619u;
    PyObject **slot = &self->cache[h & (STR_CACHE - 1)];
    PyObject *hit = *slot;
    if (hit != NULL && PyUnicode_GET_LENGTH(hit) == s.n &&
        memcmp(PyUnicode_DATA(hit), s.p, s.n) == 0) {
        Py_INCREF(hit);
        return hit;
    }
    PyObject *str = PyUnicode_DecodeASCII(s.p, s.n, NULL);
    if (str == NULL)
        return NULL;
    Py_XDECREF(*slot);
    Py_INCREF(str);
    *slot = str;
    return str;
}

/* Forget the lines of the last feed() (their block may be overwritten now). */
static void
drop_fed(Scanner *self)
{
    if (self->holding) {
        PyBuffer_Release(&self->held);
        self->holding = 0;
    }
    Py_CLEAR(self->joined);
}

/* Room for n records and spans. 0, or -1 (MemoryError). */
static int
reserve(Scanner *self, Py_ssize_t n)
{
    if (n <= self->cap)
        return 0;
    Py_ssize_t cap = self->cap ? self->cap : 1024;
    while (cap < n)
        cap *= 2;
    rec_t *recs = PyMem_Realloc(self->recs, cap * sizeof(rec_t));
    if (recs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->recs = recs;
    span_t *spans = PyMem_Realloc(self->spans, cap * sizeof(span_t));
    if (spans == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->spans = spans;
    self->cap = cap;
    return 0;
}

PyDoc_STRVAR(load_doc,
             "load(lines) -> list[int]\n\n"
             "Scan a list of non-empty JSON lines; the indices of the lines the scanner is not\n"
             "sure about (for msgspec to decode).");

static PyObject *
Scanner_load(Scanner *self, PyObject *lines)
{
    if (!PyList_Check(lines)) {
        PyErr_SetString(PyExc_TypeError, "lines must be a list of bytes");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(lines);
    if (reserve(self, n) < 0)
        return NULL;
    PyObject *unsure = PyList_New(0);
    if (unsure == NULL)
        return NULL;
    /* A copy of the list: the spans point into its bytes, which must outlive them even if
     * the caller changes its own list. */
    lines = PyList_GetSlice(lines, 0, n);
    if (lines == NULL) {
        Py_DECREF(unsure);
        return NULL;
    }
    Py_XSETREF(self->lines, lines);
    drop_fed(self);
    self->n = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *line = PyList_GET_ITEM(lines, i);
        rec_t *r = &self->recs[i];
        if (!PyBytes_Check(line)) {
            memset(r, 0, sizeof(*r));
            r->unsure = 1;
        }
        else
            scan_line(PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line), r);
        if (r->unsure) {
            PyObject *index = PyLong_FromSsize_t(i);
            if (index == NULL || PyList_Append(unsure, index) < 0) {
                Py_XDECREF(index);
                Py_DECREF(unsure);
                self->n = 0;
                return NULL;
            }
            Py_DECREF(index);
        }
    }
    return unsure;
}


/* ---------------------------------------------------------------------------------------- */
/* New rows built here (Scanner.run with a context)                                          */
/* ---------------------------------------------------------------------------------------- */

/* The context list of Scanner.run, in this order (see HubbleReader._read_scanned). */
enum {
    CX_PENDING,   /* OrderedDict: connection key -> row waiting for hold_seconds */
    CX_ENDPOINTS, /* dict: raw endpoint bytes -> (resolved endpoint, identity) */
    CX_PODS,      /* dict: address or identity -> resolved endpoint of the pod seen there */
    CX_IPS,       /* dict: address text -> canonical text (_common._IP_CACHE) */
    CX_ROWS,      /* list: the batch builder's rows */
    CX_FILE,      /* str */
    CX_NUMBERS,   /* sequence of the lines' numbers */
    CX_LATEST,    /* int: latest event time (us), updated */
    CX_RELEASED,  /* int: event time of the last release (us), updated */
    CX_HOLD,      /* int: hold_seconds in us (waiting rows older than latest - this go) */
    CX_MAX_PENDING, /* int: at most this many rows wait */
    CX_SIZE
};
#define ROW_COLUMNS 47
#define OUTCOME_AT 29 /* recommender.ingest.schema.COLUMNS.index("outcome") */
#define FILE_AT 45    /* ... .index("source_file") */
#define RETRY_US 900000LL /* hubble._RETRY_US */
#define MAX_PODS 500000
#define RELEASE_EVERY_US 1000000LL

/* The str of a span, or None when empty. */
static PyObject *
str_or_none(Scanner *self, span_t s)
{
    if (s.n == 0)
        Py_RETURN_NONE;
    return cached_str(self, s);
}

/* The cached (resolved endpoint, identity) of a raw endpoint object; borrowed, NULL when
 * Python must resolve it (not cached yet, or a workload whose event lost the pod name). */
static PyObject *
cached_endpoint(PyObject *endpoints, span_t raw, int *error)
{
    PyObject *key = PyBytes_FromStringAndSize(raw.p, raw.n);
    if (key == NULL) {
        *error = 1;
        return NULL;
    }
    PyObject *cached = PyDict_GetItemWithError(endpoints, key);
    Py_DECREF(key);
    if (cached == NULL) {
        if (PyErr_Occurred())
            *error = 1;
        return NULL;
    }
    if (!PyTuple_CheckExact(cached) || PyTuple_GET_SIZE(cached) != 2)
        return NULL;
    PyObject *found = PyTuple_GET_ITEM(cached, 0);
    if (!PyTuple_CheckExact(found) || PyTuple_GET_SIZE(found) != 7)
        return NULL;
    int workload = PyUnicode_Compare(PyTuple_GET_ITEM(found, 0), WORKLOAD_STR) == 0;
    if (workload && PyTuple_GET_ITEM(found, 4) == Py_None)
        return NULL;
    return cached;
}

/* HubbleReader._endpoint's bookkeeping for a pod seen at ``ip``: pods[ip] (and
 * pods[identity]) = found. */
static int
remember_pod(PyObject *pods, PyObject *cached, PyObject *ip)
{
    PyObject *found = PyTuple_GET_ITEM(cached, 0);
    if (PyUnicode_Compare(PyTuple_GET_ITEM(found, 0), WORKLOAD_STR) != 0)
        return 0;
    PyObject *known = PyDict_GetItemWithError(pods, ip);
    if (known == found)
        return 0;
    if (known == NULL && PyErr_Occurred())
        return -1;
    if (PyDict_GET_SIZE(pods) > MAX_PODS)
        PyDict_Clear(pods);
    if (PyDict_SetItem(pods, ip, found) < 0)
        return -1;
    PyObject *identity = PyTuple_GET_ITEM(cached, 1);
    int truth = PyObject_IsTrue(identity);
    if (truth < 0)
        return -1;
    if (truth && PyDict_SetItem(pods, identity, found) < 0)
        return -1;
    return 0;
}

/* The canonical addresses (borrowed) and cached endpoints (new references) of a line whose
 * row may be built here. */
typedef struct {
    PyObject *src_ip, *dst_ip, *src, *dst;
} resolved_t;

/* Look up what a row of connection ``key`` needs, changing nothing: 1, 0 when Python must
 * handle the line (an address or endpoint it has not resolved yet), -1 on error. */
static int
resolve(rec_t *r, PyObject *key, PyObject *ctx, resolved_t *out)
{
    PyObject *ips = PyList_GET_ITEM(ctx, CX_IPS);
    out->src_ip = PyDict_GetItemWithError(ips, PyTuple_GET_ITEM(key, 0));
    if (out->src_ip == NULL)
        return PyErr_Occurred() ? -1 : 0;
    out->dst_ip = PyDict_GetItemWithError(ips, PyTuple_GET_ITEM(key, 1));
    if (out->dst_ip == NULL)
        return PyErr_Occurred() ? -1 : 0;
    int error = 0;
    PyObject *endpoints = PyList_GET_ITEM(ctx, CX_ENDPOINTS);
    PyObject *src = cached_endpoint(endpoints, r->src_raw, &error);
    if (src == NULL)
        return error ? -1 : 0;
    PyObject *dst = cached_endpoint(endpoints, r->dst_raw, &error);
    if (dst == NULL)
        return error ? -1 : 0;
    out->src = Py_NewRef(src); /* set only on success: the caller releases them */
    out->dst = Py_NewRef(dst);
    return 1;
}

/* context[CX_LATEST] = max(it, micros). 0, or -1 on error. */
static int
bump_latest(PyObject *ctx, long long micros)
{
    long long latest = PyLong_AsLongLong(PyList_GET_ITEM(ctx, CX_LATEST));
    if (latest == -1 && PyErr_Occurred())
        return -1;
    if (micros > latest) {
        PyObject *value = PyLong_FromLongLong(micros);
        if (value == NULL || PyList_SetItem(ctx, CX_LATEST, value) < 0)
            return -1;
    }
    return 0;
}

/* seen[key] = micros. 0, or -1 on error. */
static int
set_seen(PyObject *seen, PyObject *key, long long micros)
{
    PyObject *value = PyLong_FromLongLong(micros);
    if (value == NULL)
        return -1;
    int status = PyDict_SetItem(seen, key, value);
    Py_DECREF(value);
    return status;
}

/* The last time (us) in ``seen`` of ``key``: 1 (found), 0 (absent), -1 on error, -2 when the
 * value is not a plain integer (Python decides then). */
static int
get_seen(PyObject *seen, PyObject *key, long long *last)
{
    PyObject *value = PyDict_GetItemWithError(seen, key); /* borrowed */
    if (value == NULL)
        return PyErr_Occurred() ? -1 : 0;
    int overflow = 0;
    if (!PyLong_CheckExact(value))
        return -2;
    *last = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow || (*last == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return -2;
    }
    return 1;
}

static int release_rows(PyObject *pending, PyObject *rows, int all, long long cutoff,
                        Py_ssize_t max_pending);

/* Release the waiting rows as the reader would now (put_row asked for it). 0, or -1. */
static int
release_now(PyObject *ctx)
{
    long long latest = PyLong_AsLongLong(PyList_GET_ITEM(ctx, CX_LATEST));
    long long hold = PyLong_AsLongLong(PyList_GET_ITEM(ctx, CX_HOLD));
    Py_ssize_t max_pending = PyLong_AsSsize_t(PyList_GET_ITEM(ctx, CX_MAX_PENDING));
    if (PyErr_Occurred())
        return -1;
    return release_rows(PyList_GET_ITEM(ctx, CX_PENDING), PyList_GET_ITEM(ctx, CX_ROWS), 0,
                        latest - hold, max_pending);
}

/* Put the row of line i (HubbleReader._add's, with ``connections`` and the five L7 columns
 * ``l7``, new references that this function takes) in the waiting rows under
 * ``pending_key``, as _add does; ``res`` as resolve() found it (its references are taken
 * too), and release the waiting rows when _add would. 0, or -1 on error. */
static int
put_row(Scanner *self, rec_t *r, Py_ssize_t i, PyObject *key, PyObject *pending_key,
        long long micros, int connections, PyObject **l7, resolved_t *res, PyObject *ctx,
        PyObject *outcome)
{
    int status = -1;
    PyObject *row = NULL, *when = NULL, *line_no = NULL;
    PyObject *src = res->src, *dst = res->dst;
    PyObject *pending = PyList_GET_ITEM(ctx, CX_PENDING);
    long long sport = r->has_tcp ? r->tcp_sport : r->udp_sport;
    long long dport = r->has_tcp ? r->tcp_dport : r->udp_dport;
    long long released = PyLong_AsLongLong(PyList_GET_ITEM(ctx, CX_RELEASED));
    if (released == -1 && PyErr_Occurred())
        goto done;
    when = PyLong_FromLongLong(micros);
    if (when == NULL)
        goto done;
    PyObject *pods = PyList_GET_ITEM(ctx, CX_PODS);
    if (remember_pod(pods, src, res->src_ip) < 0 || remember_pod(pods, dst, res->dst_ip) < 0)
        goto done;
    line_no = PySequence_GetItem(PyList_GET_ITEM(ctx, CX_NUMBERS), i);
    if (line_no == NULL)
        goto done;
    row = PyList_New(ROW_COLUMNS);
    if (row == NULL)
        goto done;
    PyObject *sfound = PyTuple_GET_ITEM(src, 0), *dfound = PyTuple_GET_ITEM(dst, 0);
    PyObject *direction = Py_None;
    if (r->dir_kind == 1) {
        if (r->dir.n == 7 && memcmp(r->dir.p, "INGRESS", 7) == 0)
            direction = INGRESS_STR;
        else if (r->dir.n == 6 && memcmp(r->dir.p, "EGRESS", 6) == 0)
            direction = EGRESS_STR;
    }
    else if (r->dir_kind == 2)
        direction = r->dir_int == 1 ? INGRESS_STR : r->dir_int == 2 ? EGRESS_STR : Py_None;
    PyObject *point = r->point_kind == 1 ? str_or_none(self, r->point) : Py_NewRef(Py_None);
    PyObject *node = str_or_none(self, r->flow_node.n ? r->flow_node : r->line_node);
    PyObject *svc_name = NULL, *svc_ns = NULL;
    if (r->has_svc && r->svc_name.n) {
        svc_name = cached_str(self, r->svc_name);
        svc_ns = str_or_none(self, r->svc_ns);
    }
    else {
        svc_name = Py_NewRef(Py_None);
        svc_ns = Py_NewRef(Py_None);
    }
    PyObject *sport_obj = PyLong_FromLongLong(sport), *dport_obj = PyLong_FromLongLong(dport);
    /* The column order of recommender.ingest.schema.FLOW_SCHEMA (HubbleReader._add's row). */
    PyObject *values[ROW_COLUMNS] = {
        Py_NewRef(when), Py_NewRef(when),
        Py_NewRef(PyTuple_GET_ITEM(sfound, 0)), Py_NewRef(PyTuple_GET_ITEM(sfound, 1)),
        Py_NewRef(PyTuple_GET_ITEM(sfound, 2)), Py_NewRef(PyTuple_GET_ITEM(sfound, 3)),
        Py_NewRef(PyTuple_GET_ITEM(sfound, 4)), Py_NewRef(PyTuple_GET_ITEM(sfound, 5)),
        Py_NewRef(res->src_ip), sport_obj, Py_NewRef(PyTuple_GET_ITEM(sfound, 6)),
        Py_NewRef(PyTuple_GET_ITEM(dfound, 0)), Py_NewRef(PyTuple_GET_ITEM(dfound, 1)),
        Py_NewRef(PyTuple_GET_ITEM(dfound, 2)), Py_NewRef(PyTuple_GET_ITEM(dfound, 3)),
        Py_NewRef(PyTuple_GET_ITEM(dfound, 4)), Py_NewRef(PyTuple_GET_ITEM(dfound, 5)),
        Py_NewRef(res->dst_ip), dport_obj, Py_NewRef(PyTuple_GET_ITEM(dfound, 6)),
        Py_NewRef(PyTuple_GET_ITEM(key, 2)), /* protocol */
        Py_NewRef(Py_None), Py_NewRef(Py_None), /* icmp type, code */
        svc_ns, svc_name,
        Py_NewRef(Py_None), /* dst_service_port */
        Py_NewRef(Py_None), /* dns names */
        Py_NewRef(ALLOWED_STR), Py_NewRef(Py_None), /* verdict, drop reason */
        Py_NewRef(outcome),
        Py_NewRef(Py_None), Py_NewRef(Py_None),
        Py_NewRef(direction), point, node,
        Py_NewRef(Py_False), /* reply */
        PyLong_FromLong(connections),
        Py_NewRef(Py_None), Py_NewRef(Py_None),
        l7[0], l7[1], l7[2], l7[3], l7[4], /* l7 protocol, method, path, code, dns query */
        Py_NewRef(HUBBLE_STR), Py_NewRef(PyList_GET_ITEM(ctx, CX_FILE)), line_no,
    };
    l7 = NULL;      /* owned by values now */
    line_no = NULL; /* likewise */
    int missing = 0;
    for (int c = 0; c < ROW_COLUMNS; c++) {
        if (values[c] == NULL)
            missing = 1;
        PyList_SET_ITEM(row, c, values[c]);
    }
    if (missing)
        goto done;
    int waiting = PyDict_Contains(pending, pending_key);
    if (waiting < 0)
        goto done;
    if (waiting) {
        PyObject *older = PyObject_CallMethodOneArg(pending, POP_STR, pending_key);
        if (older == NULL)
            goto done;
        int appended = PyList_Append(PyList_GET_ITEM(ctx, CX_ROWS), older);
        Py_DECREF(older);
        if (appended < 0)
            goto done;
    }
    if (PyObject_SetItem(pending, pending_key, row) < 0)
        goto done;
    Py_ssize_t size = PyObject_Size(pending);
    if (size < 0)
        goto done;
    if ((size & 255) == 0 || micros - released >= RELEASE_EVERY_US) {
        PyObject *value = PyLong_FromLongLong(micros);
        if (value == NULL || PyList_SetItem(ctx, CX_RELEASED, value) < 0 ||
            release_now(ctx) < 0)
            goto done;
    }
    status = 0;
done:
    if (l7 != NULL)
        for (int c = 0; c < 5; c++)
            Py_XDECREF(l7[c]);
    Py_XDECREF(row);
    Py_XDECREF(when);
    Py_XDECREF(line_no);
    Py_DECREF(src);
    Py_DECREF(dst);
    return status;
}

/* Add the row of new connection ``key`` (line i, a plain FORWARDED TCP/UDP event) as
 * HubbleReader._add does: 1 when added, 0 when Python must handle the line (nothing changed
 * then), -1 on error. */
static int
add_row(Scanner *self, rec_t *r, Py_ssize_t i, PyObject *key, long long micros, PyObject *seen,
        PyObject *ctx)
{
    long long sport = r->has_tcp ? r->tcp_sport : r->udp_sport;
    long long dport = r->has_tcp ? r->tcp_dport : r->udp_dport;
    if (!r->forwarded || r->n_names || r->src.n == 0 || r->dst.n == 0 || sport < 0 ||
        sport > 65535 || dport < 0 || dport > 65535)
        return 0;
    resolved_t res;
    int found = resolve(r, key, ctx, &res);
    if (found <= 0)
        return found;
    /* From here on the line is this function's. */
    PyObject *l7[5] = {Py_NewRef(Py_None), Py_NewRef(Py_None), Py_NewRef(Py_None),
                       Py_NewRef(Py_None), Py_NewRef(Py_None)};
    if (bump_latest(ctx, micros) < 0 || set_seen(seen, key, micros) < 0) {
        for (int c = 0; c < 5; c++)
            Py_DECREF(l7[c]);
        Py_DECREF(res.src);
        Py_DECREF(res.dst);
        return -1;
    }
    /* HubbleReader._add: an ACK without SYN or RST is a connection seen mid-stream. */
    PyObject *outcome = r->has_tcp && r->has_flags && r->fl_ack && !r->fl_syn && !r->fl_rst
                            ? ESTABLISHED_STR
                            : UNKNOWN_STR;
    return put_row(self, r, i, key, key, micros, 1, l7, &res, ctx, outcome) < 0 ? -1 : 1;
}

static inline int
is_scheme_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '-' || c == '.';
}

/* urllib.parse.urlsplit(url).path for a URL of printable ASCII (what scan_string passes);
 * 0 when Python must decide (a space, which urlsplit strips at the start, or a bracket, which
 * may make it raise). */
static int
url_path(span_t url, span_t *path)
{
    const char *p = url.p, *e = url.p + url.n;
    for (const char *q = p; q < e; q++)
        if (*q == ' ' || *q == '[' || *q == ']')
            return 0;
    const char *colon = memchr(p, ':', e - p);
    if (colon != NULL && colon > p && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))) {
        const char *q = p;
        while (q < colon && is_scheme_char(*q))
            q++;
        if (q == colon)
            p = colon + 1;
    }
    if (e - p >= 2 && p[0] == '/' && p[1] == '/') {
        const char *q = p + 2;
        while (q < e && *q != '/' && *q != '?' && *q != '#')
            q++;
        p = q;
    }
    const char *hash = memchr(p, '#', e - p);
    if (hash != NULL)
        e = hash;
    const char *mark = memchr(p, '?', e - p);
    if (mark != NULL)
        e = mark;
    path->p = p;
    path->n = e - p;
    return 1;
}

/* An L7 request (line i: FORWARDED TCP/UDP, is_reply false, an http or dns section) as
 * HubbleReader._add settles it: a duplicate of a request seen on the same connection within
 * the idle time, else a row (connections 1 on a new connection, 0 on a known one, whose
 * waiting key is then (key, detail)). 1 when settled (*duplicate set for a duplicate), 0 when
 * Python must handle the line (nothing changed then), -1 on error. */
static int
settle_l7(Scanner *self, rec_t *r, Py_ssize_t i, PyObject *key, long long micros,
          PyObject *seen, long long idle, PyObject *ctx, int *duplicate)
{
    span_t path = {NULL, 0};
    if (!r->forwarded || r->n_names || !(r->has_http || r->has_dns))
        return 0;
    if (r->has_http && r->http_url.n && !url_path(r->http_url, &path))
        return 0;
    int status = -1, found;
    PyObject *detail = NULL, *l7_key = NULL, *http = NULL, *query = NULL;
    PyObject *l7[5] = {NULL, NULL, NULL, NULL, NULL};
    resolved_t res = {NULL, NULL, NULL, NULL};
    /* l7_detail = ((method, url) | None, query | None), and the key (key, l7_detail). */
    if (r->has_http) {
        PyObject *method = cached_str(self, r->http_method);
        PyObject *url = method ? PyUnicode_DecodeASCII(r->http_url.p, r->http_url.n, NULL)
                               : NULL;
        http = url ? PyTuple_Pack(2, method, url) : NULL;
        Py_XDECREF(method);
        Py_XDECREF(url);
    }
    else
        http = Py_NewRef(Py_None);
    query = r->has_dns ? cached_str(self, r->dns_query) : Py_NewRef(Py_None);
    if (http == NULL || query == NULL)
        goto done;
    detail = PyTuple_Pack(2, http, query);
    l7_key = detail ? PyTuple_Pack(2, key, detail) : NULL;
    if (l7_key == NULL)
        goto done;
    long long last = 0, l7_last = 0;
    found = get_seen(seen, key, &last);
    if (found == -1)
        goto done;
    int active = found == 1 && micros - last <= idle;
    int l7_active = 0;
    if (active) {
        int l7_found = get_seen(seen, l7_key, &l7_last);
        if (l7_found == -1)
            goto done;
        if (l7_found == -2) {
            status = 0;
            goto done;
        }
        l7_active = l7_found == 1 && micros - l7_last <= idle;
    }
    if (found == -2) {
        status = 0;
        goto done;
    }
    if (!l7_active) {
        int ok = resolve(r, key, ctx, &res);
        if (ok <= 0) {
            status = ok;
            goto done;
        }
    }
    /* From here on the line is this function's. */
    if (bump_latest(ctx, micros) < 0)
        goto done;
    if (active) {
        if (micros > last && set_seen(seen, key, micros) < 0)
            goto done;
        if (set_seen(seen, l7_key, micros) < 0)
            goto done;
        if (l7_active) {
            *duplicate = 1;
            status = 1;
            goto done;
        }
    }
    else if (set_seen(seen, key, micros) < 0 || set_seen(seen, l7_key, micros) < 0)
        goto done;
    if (r->has_http) {
        l7[0] = PyUnicode_FromString("http");
        l7[1] = str_or_none(self, r->http_method);
        l7[2] = path.n ? PyUnicode_DecodeASCII(path.p, path.n, NULL) : Py_NewRef(Py_None);
        l7[3] = r->http_code >= 100 && r->http_code <= 999 ? PyLong_FromLongLong(r->http_code)
                                                            : Py_NewRef(Py_None);
        l7[4] = Py_NewRef(Py_None);
    }
    else {
        l7[0] = PyUnicode_FromString("dns");
        l7[1] = Py_NewRef(Py_None);
        l7[2] = Py_NewRef(Py_None);
        l7[3] = Py_NewRef(Py_None);
        l7[4] = str_or_none(self, r->dns_query);
    }
    status = put_row(self, r, i, key, active ? l7_key : key, micros, active ? 0 : 1, l7, &res,
                     ctx, r->has_tcp ? ESTABLISHED_STR : UNKNOWN_STR) < 0
                 ? -1
                 : 1;
    res.src = res.dst = NULL; /* taken by put_row, as l7 was */
    for (int c = 0; c < 5; c++)
        l7[c] = NULL;
done:
    for (int c = 0; c < 5; c++)
        Py_XDECREF(l7[c]);
    Py_XDECREF(res.src);
    Py_XDECREF(res.dst);
    Py_XDECREF(http);
    Py_XDECREF(query);
    Py_XDECREF(detail);
    Py_XDECREF(l7_key);
    return status;
}

/* The reader's connection key (source, destination, "TCP" | "UDP", sport, dport, None) of a
 * TCP or UDP line; NULL on error. */
static PyObject *
connection_key(Scanner *self, rec_t *r)
{
    PyObject *key = PyTuple_New(6);
    if (key == NULL)
        return NULL;
    PyObject *src = cached_str(self, r->src);
    PyObject *dst = src ? cached_str(self, r->dst) : NULL;
    PyObject *sport = dst ? PyLong_FromLongLong(r->has_tcp ? r->tcp_sport : r->udp_sport)
                          : NULL;
    PyObject *dport = sport ? PyLong_FromLongLong(r->has_tcp ? r->tcp_dport : r->udp_dport)
                            : NULL;
    PyObject *proto = r->has_tcp ? TCP_STR : UDP_STR;
    PyTuple_SET_ITEM(key, 0, src);
    PyTuple_SET_ITEM(key, 1, dst);
    PyTuple_SET_ITEM(key, 2, Py_NewRef(proto));
    PyTuple_SET_ITEM(key, 3, sport);
    PyTuple_SET_ITEM(key, 4, dport);
    PyTuple_SET_ITEM(key, 5, Py_NewRef(Py_None));
    if (dport == NULL) {
        Py_DECREF(key);
        return NULL;
    }
    return key;
}

/* HubbleReader._waiting: the waiting row (borrowed) of connection ``key`` that a line of this
 * file at ``micros`` may settle (same file, at most hold older); NULL (no error) when there is
 * none, NULL with an error set on error. */
static PyObject *
waiting_row(PyObject *ctx, PyObject *key, long long micros)
{
    PyObject *row = PyDict_GetItemWithError(PyList_GET_ITEM(ctx, CX_PENDING), key);
    if (row == NULL || !PyList_CheckExact(row) || PyList_GET_SIZE(row) != ROW_COLUMNS)
        return NULL;
    long long first = PyLong_AsLongLong(PyList_GET_ITEM(row, 0));
    long long hold = PyLong_AsLongLong(PyList_GET_ITEM(ctx, CX_HOLD));
    if (PyErr_Occurred())
        return NULL;
    if (micros - first > hold)
        return NULL;
    PyObject *file = PyList_GET_ITEM(row, FILE_AT), *mine = PyList_GET_ITEM(ctx, CX_FILE);
    if (file != mine) {
        int same = PyObject_RichCompareBool(file, mine, Py_EQ);
        if (same <= 0)
            return NULL; /* an error (-1) stays set */
    }
    return row;
}

/* row[OUTCOME_AT] == value (by identity, else by text). */
static int
outcome_is(PyObject *row, PyObject *value)
{
    PyObject *have = PyList_GET_ITEM(row, OUTCOME_AT);
    if (have == value)
        return 1;
    return PyUnicode_Check(have) && PyUnicode_Compare(have, value) == 0;
}

static void
set_outcome(PyObject *row, PyObject *value)
{
    PyList_SetItem(row, OUTCOME_AT, Py_NewRef(value)); /* a list of ROW_COLUMNS: cannot fail */
}

/* HubbleReader._answered: a reply-direction TCP or UDP line (flags sure) settles the outcome
 * of its connection's waiting row (the reversed 5-tuple). 0, or -1 on error. */
static int
answered(Scanner *self, rec_t *r, PyObject *ctx)
{
    if (!(r->has_flow_time || r->has_line_time))
        return 0;
    long long micros = r->has_flow_time ? r->flow_time : r->line_time;
    PyObject *key = PyTuple_New(6);
    if (key == NULL)
        return -1;
    PyObject *src = cached_str(self, r->dst);
    PyObject *dst = src ? cached_str(self, r->src) : NULL;
    PyObject *sport = dst ? PyLong_FromLongLong(r->has_tcp ? r->tcp_dport : r->udp_dport)
                          : NULL;
    PyObject *dport = sport ? PyLong_FromLongLong(r->has_tcp ? r->tcp_sport : r->udp_sport)
                            : NULL;
    PyTuple_SET_ITEM(key, 0, src);
    PyTuple_SET_ITEM(key, 1, dst);
    PyTuple_SET_ITEM(key, 2, Py_NewRef(r->has_tcp ? TCP_STR : UDP_STR));
    PyTuple_SET_ITEM(key, 3, sport);
    PyTuple_SET_ITEM(key, 4, dport);
    PyTuple_SET_ITEM(key, 5, Py_NewRef(Py_None));
    if (dport == NULL) {
        Py_DECREF(key);
        return -1;
    }
    PyObject *row = waiting_row(ctx, key, micros);
    Py_DECREF(key);
    if (row == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (r->has_tcp && r->has_flags && r->fl_rst) {
        if (!outcome_is(row, ESTABLISHED_STR))
            set_outcome(row, FAILED_STR);
    }
    else
        set_outcome(row, ESTABLISHED_STR);
    return 0;
}

/* HubbleReader._forward: a further client-side TCP line (flags sure) of connection ``key``.
 * 0, or -1 on error. */
static int
forward(rec_t *r, PyObject *key, long long micros, PyObject *ctx)
{
    int ack = r->fl_ack && !r->fl_syn && !r->fl_rst;
    int retry = r->fl_syn && !r->fl_ack;
    if (!ack && !retry)
        return 0;
    PyObject *row = waiting_row(ctx, key, micros);
    if (row == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (ack) {
        set_outcome(row, ESTABLISHED_STR);
        return 0;
    }
    if (!outcome_is(row, UNKNOWN_STR))
        return 0;
    long long first = PyLong_AsLongLong(PyList_GET_ITEM(row, 0));
    if (first == -1 && PyErr_Occurred())
        return -1;
    if (micros - first >= RETRY_US)
        set_outcome(row, FAILED_STR);
    return 0;
}

PyDoc_STRVAR(run_doc,
             "run(start, seen, idle_us, context=None) -> (index, replies, duplicates, rows)\n\n"
             "Settle the loaded lines from ``start`` on: count replies, count duplicates (and\n"
             "update ``seen``, the reader's dict of connection key -> last time in us) until a\n"
             "line that Python must handle; its index (len(lines) at the end). With a context\n"
             "(see HubbleReader._read_scanned) the rows of plain new connections and of L7\n"
             "requests are added here too (counted in ``rows``), and the waiting rows released\n"
             "as the reader's _add releases them.");

static PyObject *
Scanner_run(Scanner *self, PyObject *args)
{
    Py_ssize_t start;
    PyObject *seen, *ctx = Py_None;
    long long idle;
    if (!PyArg_ParseTuple(args, "nO!L|O", &start, &PyDict_Type, &seen, &idle, &ctx))
        return NULL;
    if (ctx == Py_None)
        ctx = NULL;
    else if (!PyList_CheckExact(ctx) || PyList_GET_SIZE(ctx) != CX_SIZE ||
             !PyDict_Check(PyList_GET_ITEM(ctx, CX_PENDING)) ||
             !PyDict_Check(PyList_GET_ITEM(ctx, CX_ENDPOINTS)) ||
             !PyDict_Check(PyList_GET_ITEM(ctx, CX_PODS)) ||
             !PyDict_Check(PyList_GET_ITEM(ctx, CX_IPS)) ||
             !PyList_Check(PyList_GET_ITEM(ctx, CX_ROWS))) {
        PyErr_SetString(PyExc_TypeError, "context must be the list HubbleReader passes");
        return NULL;
    }
    Py_ssize_t i;
    long long replies = 0, duplicates = 0, rows = 0;
    for (i = start < 0 ? 0 : start; i < self->n; i++) {
        rec_t *r = &self->recs[i];
        if (r->unsure || !r->has_flow)
            break;
        if (r->has_l7) {
            /* HubbleReader._add: once time, addresses, protocol and ports are valid, an L7
             * event of a reply (is_reply, or an L7 RESPONSE) is a reply, and a request of a
             * FORWARDED event is settled by settle_l7. */
            long long sp = r->has_tcp ? r->tcp_sport : r->udp_sport;
            long long dp = r->has_tcp ? r->tcp_dport : r->udp_dport;
            if (!(r->has_flow_time || r->has_line_time) || !r->has_ip || !r->src.n ||
                !r->dst.n || !r->has_l4 || !(r->has_tcp || r->has_udp) || sp < 0 ||
                sp > 65535 || dp < 0 || dp > 65535)
                break;
            if (r->is_reply == 1 || (r->is_reply == 0 && r->l7_response)) {
                if (ctx != NULL && answered(self, r, ctx) < 0)
                    return NULL;
                replies++;
                continue;
            }
            if (ctx == NULL || r->is_reply != 0 || r->overriding)
                break;
            PyObject *key = connection_key(self, r);
            if (key == NULL)
                return NULL;
            int duplicate = 0;
            int settled = settle_l7(self, r, i, key, r->has_flow_time ? r->flow_time : r->line_time,
                                    seen, idle, ctx, &duplicate);
            Py_DECREF(key);
            if (settled < 0)
                return NULL;
            if (settled == 0)
                break;
            if (duplicate)
                duplicates++;
            else
                rows++;
            continue;
        }
        if (r->is_reply < 0)
            break;
        if (r->is_reply) {
            if (ctx != NULL && r->has_ip && r->has_l4 && (r->has_tcp || r->has_udp) &&
                answered(self, r, ctx) < 0)
                return NULL;
            replies++;
            continue;
        }
        if (!r->has_ip || !r->has_l4 || !(r->has_flow_time || r->has_line_time) ||
            !(r->has_tcp || r->has_udp) || r->overriding)
            break;
        long long micros = r->has_flow_time ? r->flow_time : r->line_time;
        PyObject *key = connection_key(self, r);
        if (key == NULL)
            return NULL;
        PyObject *last = PyDict_GetItemWithError(seen, key); /* borrowed */
        if (last == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(key);
                return NULL;
            }
            goto new_connection;
        }
        int overflow = 0;
        long long last_us = PyLong_Check(last) ? PyLong_AsLongLongAndOverflow(last, &overflow)
                                               : 0;
        if (!PyLong_Check(last) || overflow || (last_us == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            Py_DECREF(key);
            break;
        }
        if (micros - last_us > idle)
            goto new_connection;
        if (micros > last_us) {
            PyObject *value = PyLong_FromLongLong(micros);
            if (value == NULL || PyDict_SetItem(seen, key, value) < 0) {
                Py_XDECREF(value);
                Py_DECREF(key);
                return NULL;
            }
            Py_DECREF(value);
        }
        if (ctx != NULL && r->has_tcp && r->has_flags && forward(r, key, micros, ctx) < 0) {
            Py_DECREF(key);
            return NULL;
        }
        Py_DECREF(key);
        duplicates++;
        continue;
    new_connection:
        if (ctx == NULL) {
            Py_DECREF(key);
            break;
        }
        int added = add_row(self, r, i, key, micros, seen, ctx);
        Py_DECREF(key);
        if (added < 0)
            return NULL;
        if (added == 0)
            break;
        rows++;
    }
    return Py_BuildValue("nLLL", i, replies, duplicates, rows);
}

PyDoc_STRVAR(fields_doc,
             "fields(index) -> dict | None\n\n"
             "What the scanner read from loaded line ``index`` (None when unsure); for tests.");

static PyObject *
Scanner_fields(Scanner *self, PyObject *arg)
{
    Py_ssize_t i = PyLong_AsSsize_t(arg);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (i < 0 || i >= self->n) {
        PyErr_SetString(PyExc_IndexError, "line index out of range");
        return NULL;
    }
    rec_t *r = &self->recs[i];
    if (r->unsure)
        Py_RETURN_NONE;
    PyObject *src = cached_str(self, r->src), *dst = cached_str(self, r->dst);
    PyObject *micros;
    if (r->has_flow_time || r->has_line_time)
        micros = PyLong_FromLongLong(r->has_flow_time ? r->flow_time : r->line_time);
    else {
        micros = Py_None;
        Py_INCREF(micros);
    }
    if (src == NULL || dst == NULL || micros == NULL) {
        Py_XDECREF(src);
        Py_XDECREF(dst);
        Py_XDECREF(micros);
        return NULL;
    }
    PyObject *out = Py_BuildValue(
        "{s:O,s:O,s:O,s:O,s:O,s:N,s:N,s:O,s:O,s:(LL),s:(LL),s:O,s:N}", "flow",
        r->has_flow ? Py_True : Py_False, "is_reply",
        r->is_reply < 0 ? Py_None : (r->is_reply ? Py_True : Py_False), "l7",
        r->has_l7 ? Py_True : Py_False, "ip", r->has_ip ? Py_True : Py_False, "l4",
        r->has_l4 ? Py_True : Py_False, "source", src, "destination", dst, "tcp",
        r->has_tcp ? Py_True : Py_False, "udp", r->has_udp ? Py_True : Py_False, "tcp_ports",
        r->tcp_sport, r->tcp_dport, "udp_ports", r->udp_sport, r->udp_dport, "overriding",
        r->overriding ? Py_True : Py_False, "micros",
        micros);
    return out;
}

static long port_share(const char *s, Py_ssize_t len, long n);

/* Take one line of a feed() when it is worker index's: its number, span and record. 0, or -1
 * on error. */
static int
feed_line(Scanner *self, const char *p, Py_ssize_t len, Py_ssize_t number, long index, long n,
          PyObject *numbers, PyObject *unsure, int *blank)
{
    if (n != 1 && port_share(p, len, n) != index)
        return 0;
    Py_ssize_t i = self->n;
    if (reserve(self, i + 1) < 0)
        return -1;
    PyObject *num = PyLong_FromSsize_t(number);
    if (num == NULL || PyList_Append(numbers, num) < 0) {
        Py_XDECREF(num);
        return -1;
    }
    Py_DECREF(num);
    self->spans[i].p = p;
    self->spans[i].n = len;
    self->n = i + 1;
    if (skip_ws(p, p + len) == p + len) {
        /* a blank line: HubbleReader._read_lines drops it (the caller reads such a chunk
         * through lines()) */
        *blank = 1;
        memset(&self->recs[i], 0, sizeof(rec_t));
        self->recs[i].unsure = 1;
        return 0;
    }
    rec_t *r = &self->recs[i];
    scan_line(p, len, r);
    if (r->unsure) {
        PyObject *at = PyLong_FromSsize_t(i);
        if (at == NULL || PyList_Append(unsure, at) < 0) {
            Py_XDECREF(at);
            return -1;
        }
        Py_DECREF(at);
    }
    return 0;
}

PyDoc_STRVAR(feed_doc,
             "feed(rest, block, first, index, n, final) -> (numbers, unsure, count, used, blank)\n"
             "\n"
             "Split ``rest + block`` (the unfinished line of the previous block, then the next\n"
             "block) into lines ending in b'\\n' (the text after the last one too when\n"
             "``final``), numbered from ``first``; keep those of worker ``index`` of ``n`` as\n"
             "hubble.share_lines() does (all when n is 1), and scan them in place as load()\n"
             "does, without a bytes object per line. ``numbers`` are the kept lines' numbers,\n"
             "``unsure`` the indices of those msgspec must decode, ``count`` the lines split,\n"
             "``used`` the bytes of ``block`` used (0 when no line ends in it),\n"
             "``blank`` True when a kept line holds only whitespace. The scanner holds ``block``\n"
             "(its buffer must not change) until the next feed() or load(); line(i) and lines()\n"
             "give the kept lines as bytes.");

static PyObject *
Scanner_feed(Scanner *self, PyObject *args)
{
    Py_buffer rest, view;
    Py_ssize_t first;
    long index, n;
    int final;
    if (!PyArg_ParseTuple(args, "y*y*nllp", &rest, &view, &first, &index, &n, &final))
        return NULL;
    Py_CLEAR(self->lines);
    drop_fed(self);
    self->n = 0;
    self->held = view; /* released by drop_fed() */
    self->holding = 1;
    PyObject *numbers = NULL, *unsure = NULL;
    int blank = 0;
    if (n < 1 || n > (1L << 20) || index < 0 || index >= n) {
        PyErr_SetString(PyExc_ValueError, "need 0 <= index < n <= 2**20");
        goto error;
    }
    numbers = PyList_New(0);
    unsure = PyList_New(0);
    if (numbers == NULL || unsure == NULL)
        goto error;
    const char *start = view.buf, *end = start + view.len, *p = start;
    Py_ssize_t count = 0;
    if (rest.len > 0) {
        /* The line that began in the previous block, joined once. */
        const char *nl = memchr(p, '\n', end - p);
        if (nl == NULL && !final)
            goto done;
        const char *stop = nl ? nl + 1 : end;
        self->joined = PyBytes_FromStringAndSize(NULL, rest.len + (stop - p));
        if (self->joined == NULL)
            goto error;
        memcpy(PyBytes_AS_STRING(self->joined), rest.buf, rest.len);
        memcpy(PyBytes_AS_STRING(self->joined) + rest.len, p, stop - p);
        if (feed_line(self, PyBytes_AS_STRING(self->joined), PyBytes_GET_SIZE(self->joined),
                      first, index, n, numbers, unsure, &blank) < 0)
            goto error;
        count = 1;
        p = stop;
    }
    while (p < end) {
        const char *nl = memchr(p, '\n', end - p);
        if (nl == NULL && !final)
            break;
        const char *stop = nl ? nl + 1 : end;
        if (feed_line(self, p, stop - p, first + count, index, n, numbers, unsure, &blank) < 0)
            goto error;
        count++;
        p = stop;
    }
done:
    PyBuffer_Release(&rest);
    return Py_BuildValue("NNnnO", numbers, unsure, count, (Py_ssize_t)(p - start),
                         blank ? Py_True : Py_False);
error:
    PyBuffer_Release(&rest);
    drop_fed(self);
    self->n = 0;
    Py_XDECREF(numbers);
    Py_XDECREF(unsure);
    return NULL;
}

/* Line i of the last feed() as bytes; NULL (IndexError) when there is none. */
static PyObject *
fed_line(Scanner *self, Py_ssize_t i)
{
    if (!self->holding || i < 0 || i >= self->n) {
        PyErr_SetString(PyExc_IndexError, "no such fed line");
        return NULL;
    }
    return PyBytes_FromStringAndSize(self->spans[i].p, self->spans[i].n);
}

PyDoc_STRVAR(line_doc, "line(i) -> bytes\n\nLine i of the last feed().");

static PyObject *
Scanner_line(Scanner *self, PyObject *arg)
{
    Py_ssize_t i = PyLong_AsSsize_t(arg);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    return fed_line(self, i);
}

PyDoc_STRVAR(lines_doc, "lines() -> list[bytes]\n\nThe lines of the last feed().");

static PyObject *
Scanner_lines(Scanner *self, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t n = self->holding ? self->n : 0;
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *line = fed_line(self, i);
        if (line == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, line);
    }
    return out;
}

static PyMethodDef Scanner_methods[] = {
    {"feed", (PyCFunction)Scanner_feed, METH_VARARGS, feed_doc},
    {"line", (PyCFunction)Scanner_line, METH_O, line_doc},
    {"lines", (PyCFunction)Scanner_lines, METH_NOARGS, lines_doc},
    {"load", (PyCFunction)Scanner_load, METH_O, load_doc},
    {"run", (PyCFunction)Scanner_run, METH_VARARGS, run_doc},
    {"fields", (PyCFunction)Scanner_fields, METH_O, fields_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "recommender.ingest._hubble_scan.Scanner",
    .tp_basicsize = sizeof(Scanner),
    .tp_dealloc = (destructor)Scanner_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Settles replies and repeated events of Hubble JSON lines (see the module).",
    .tp_methods = Scanner_methods,
    .tp_new = PyType_GenericNew,
};

/* ---------------------------------------------------------------------------------------- */
/* port_share(): which parallel worker a line is for (see Scanner.feed)                     */
/* ---------------------------------------------------------------------------------------- */

static inline int
is_re_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* The first "source_port": in [p, end), as memmem finds it, or NULL. With SSE2 it looks for
 * the pair "_p" 16 positions at a time (a Hubble line has few) and checks the whole key
 * around each: several times faster than memmem on the 200-300 bytes before the key. */
static const char *
find_source_port(const char *p, const char *end)
{
    static const char key[] = "\"source_port\":";
    const Py_ssize_t kl = sizeof(key) - 1, at = 7; /* key[7] is '_' */
    const char *s = p + at;
#ifdef __SSE2__
    const __m128i under = _mm_set1_epi8('_'), pee = _mm_set1_epi8('p');
    while (end - s >= 17) {
        __m128i a = _mm_loadu_si128((const __m128i *)s);
        __m128i b = _mm_loadu_si128((const __m128i *)(s + 1));
        unsigned m = (unsigned)_mm_movemask_epi8(
            _mm_and_si128(_mm_cmpeq_epi8(a, under), _mm_cmpeq_epi8(b, pee)));
        while (m) {
            const char *q = s + __builtin_ctz(m) - at;
            if (end - q >= kl && memcmp(q, key, kl) == 0)
                return q;
            m &= m - 1;
        }
        s += 16;
    }
#endif
    const char *from = s - at > p ? s - at : p;
    if (end - from < kl)
        return NULL;
    return memmem(from, end - from, key, kl);
}

/* (int(a) + int(b)) % n of the first match of
 * rb'"source_port":\s*(\d+)\s*,\s*"destination_port":\s*(\d+)'; 0 without a match. */
static long
port_share(const char *s, Py_ssize_t len, long n)
{
    static const char head[] = "\"source_port\":";
    static const char mid[] = "\"destination_port\":";
    const Py_ssize_t hl = sizeof(head) - 1, ml = sizeof(mid) - 1;
    const char *end = s + len, *p = s;
    while ((p = find_source_port(p, end)) != NULL) {
        const char *q = p + hl;
        long a = 0, b = 0;
        p++;
        while (q < end && is_re_space(*q))
            q++;
        if (q >= end || *q < '0' || *q > '9')
            continue;
        while (q < end && *q >= '0' && *q <= '9')
            a = (a * 10 + (*q++ - '0')) % n;
        while (q < end && is_re_space(*q))
            q++;
        if (q >= end || *q != ',')
            continue;
        q++;
        while (q < end && is_re_space(*q))
            q++;
        if (end - q < ml || memcmp(q, mid, ml) != 0)
            continue;
        q += ml;
        while (q < end && is_re_space(*q))
            q++;
        if (q >= end || *q < '0' || *q > '9')
            continue;
        while (q < end && *q >= '0' && *q <= '9')
            b = (b * 10 + (*q++ - '0')) % n;
        return (a + b) % n;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* columns(): rows to columns for the batch builder                                          */
/* ---------------------------------------------------------------------------------------- */

PyDoc_STRVAR(columns_doc,
             "columns(rows, width) -> list[list | None]\n\n"
             "The columns of a list of rows (lists or tuples of ``width`` values), read row by\n"
             "row (``zip(*rows)`` reads column by column, a cache miss per value); None for a\n"
             "column whose values are all None.");

static PyObject *
columns(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *rows;
    Py_ssize_t width;
    if (!PyArg_ParseTuple(args, "O!n", &PyList_Type, &rows, &width))
        return NULL;
    if (width < 0) {
        PyErr_SetString(PyExc_ValueError, "width must not be negative");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(rows);
    PyObject *out = PyList_New(width);
    if (out == NULL)
        return NULL;
    char *used = PyMem_Calloc(width ? width : 1, 1);
    if (used == NULL) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t c = 0; c < width; c++) {
        PyObject *column = PyList_New(n);
        if (column == NULL)
            goto fail;
        PyList_SET_ITEM(out, c, column);
    }
    PyObject **cols = ((PyListObject *)out)->ob_item;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        PyObject **items;
        if (PyList_CheckExact(row) && PyList_GET_SIZE(row) == width)
            items = ((PyListObject *)row)->ob_item;
        else if (PyTuple_CheckExact(row) && PyTuple_GET_SIZE(row) == width)
            items = ((PyTupleObject *)row)->ob_item;
        else {
            PyErr_Format(PyExc_ValueError, "row %zd is not a list or tuple of %zd values", i,
                         width);
            goto fail;
        }
        for (Py_ssize_t c = 0; c < width; c++) {
            PyObject *v = items[c];
            used[c] |= v != Py_None;
            Py_INCREF(v);
            PyList_SET_ITEM(cols[c], i, v);
        }
    }
    for (Py_ssize_t c = 0; c < width; c++) {
        if (!used[c] && n) {
            Py_INCREF(Py_None);
            PyList_SetItem(out, c, Py_None);
        }
    }
    PyMem_Free(used);
    return out;
fail:
    PyMem_Free(used);
    Py_DECREF(out);
    return NULL;
}

PyDoc_STRVAR(release_doc,
             "release(pending, rows, cutoff, max_pending) -> None\n\n"
             "HubbleReader._release: move the rows waiting in the OrderedDict ``pending``\n"
             "(oldest first) to the list ``rows`` while their time (row[0]) is before\n"
             "``cutoff`` or more than ``max_pending`` wait; all of them when cutoff is None.");

/* HubbleReader._release: 0, or -1 on error. */
static int
release_rows(PyObject *pending, PyObject *rows, int all, long long cutoff, Py_ssize_t max_pending)
{
    for (;;) {
        Py_ssize_t size = PyObject_Size(pending);
        if (size < 0)
            return -1;
        if (size == 0)
            break;
        PyObject *it = PyObject_GetIter(pending);
        if (it == NULL)
            return -1;
        PyObject *key = PyIter_Next(it);
        Py_DECREF(it);
        if (key == NULL)
            return PyErr_Occurred() ? -1 : 0;
        PyObject *row = PyObject_GetItem(pending, key);
        if (row == NULL) {
            Py_DECREF(key);
            return -1;
        }
        if (!all && size <= max_pending) {
            PyObject *first = PySequence_GetItem(row, 0);
            long long when = first ? PyLong_AsLongLong(first) : -1;
            Py_XDECREF(first);
            if (when == -1 && PyErr_Occurred()) {
                Py_DECREF(key);
                Py_DECREF(row);
                return -1;
            }
            if (when >= cutoff) {
                Py_DECREF(key);
                Py_DECREF(row);
                break;
            }
        }
        int failed = PyObject_DelItem(pending, key) < 0 || PyList_Append(rows, row) < 0;
        Py_DECREF(key);
        Py_DECREF(row);
        if (failed)
            return -1;
    }
    return 0;
}

static PyObject *
release(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *pending, *rows, *cutoff_obj;
    Py_ssize_t max_pending;
    if (!PyArg_ParseTuple(args, "O!O!On", &PyDict_Type, &pending, &PyList_Type, &rows,
                          &cutoff_obj, &max_pending))
        return NULL;
    int all = cutoff_obj == Py_None;
    long long cutoff = all ? 0 : PyLong_AsLongLong(cutoff_obj);
    if (cutoff == -1 && PyErr_Occurred())
        return NULL;
    if (release_rows(pending, rows, all, cutoff, max_pending) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(unique_objects_doc,
             "unique_objects(values) -> (uniques, positions)\n\n"
             "The distinct objects of a list (by identity, in order of first appearance) and,\n"
             "as bytes of native int32, the position of each value among them: label maps of\n"
             "one endpoint repeat as the same object, and are converted to Arrow once.");

static PyObject *
unique_objects(PyObject *Py_UNUSED(module), PyObject *values)
{
    if (!PyList_Check(values)) {
        PyErr_SetString(PyExc_TypeError, "values must be a list");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(values);
    if (n > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "too many values");
        return NULL;
    }
    Py_ssize_t cap = 16;
    while (cap < 2 * n)
        cap <<= 1;
    PyObject **keys = PyMem_Calloc(cap, sizeof(PyObject *));
    int32_t *slots = PyMem_Malloc(cap * sizeof(int32_t));
    PyObject *uniques = PyList_New(0);
    PyObject *positions = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int32_t));
    if (keys == NULL || slots == NULL || uniques == NULL || positions == NULL) {
        PyMem_Free(keys);
        PyMem_Free(slots);
        Py_XDECREF(uniques);
        Py_XDECREF(positions);
        return PyErr_NoMemory();
    }
    int32_t *out = (int32_t *)PyBytes_AS_STRING(positions);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyList_GET_ITEM(values, i);
        size_t h = ((uintptr_t)v >> 4) * 0x9E3779B97F4A7C15ull;
        Py_ssize_t at = (Py_ssize_t)(h & (cap - 1));
        while (keys[at] != NULL && keys[at] != v)
            at = (at + 1) & (cap - 1);
        if (keys[at] == NULL) {
            keys[at] = v;
            slots[at] = (int32_t)PyList_GET_SIZE(uniques);
            if (PyList_Append(uniques, v) < 0) {
                PyMem_Free(keys);
                PyMem_Free(slots);
                Py_DECREF(uniques);
                Py_DECREF(positions);
                return NULL;
            }
        }
        out[i] = slots[at];
    }
    PyMem_Free(keys);
    PyMem_Free(slots);
    return Py_BuildValue("NN", uniques, positions);
}

/* ---------------------------------------------------------------------------------------- */
/* arrow_buffers(): Arrow buffers of a column of str or int values                          */
/* ---------------------------------------------------------------------------------------- */

PyDoc_STRVAR(arrow_buffers_doc,
             "arrow_buffers(values, width) -> (validity, offsets, data, nulls) | None\n\n"
             "The buffers of an Arrow array of ``values`` (a list of str or None when ``width``\n"
             "is 0: a utf8 array; of int or None for an integer array of ``width`` bytes, 2, 4\n"
             "or 8): the validity bitmap (None without nulls), the int32 offsets (None for\n"
             "integers), the data, and the count of nulls. None when a value is of another type\n"
             "or out of range, or the text exceeds 2 GiB: pyarrow then converts the list.");

/* A new bytes object of n bytes, zeroed when ``zero``. */
static PyObject *
new_bytes(Py_ssize_t n, int zero)
{
    PyObject *b = PyBytes_FromStringAndSize(NULL, n);
    if (b != NULL && zero)
        memset(PyBytes_AS_STRING(b), 0, n);
    return b;
}

static PyObject *
arrow_buffers(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *values;
    int width;
    if (!PyArg_ParseTuple(args, "O!i", &PyList_Type, &values, &width))
        return NULL;
    if (width != 0 && width != 2 && width != 4 && width != 8) {
        PyErr_SetString(PyExc_ValueError, "width must be 0, 2, 4 or 8");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(values), nulls = 0, total = 0;
    /* First pass: types, nulls and the text size. */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyList_GET_ITEM(values, i);
        if (v == Py_None) {
            nulls++;
            continue;
        }
        if (width == 0) {
            if (!PyUnicode_CheckExact(v))
                Py_RETURN_NONE;
            Py_ssize_t size;
            if (PyUnicode_AsUTF8AndSize(v, &size) == NULL) {
                PyErr_Clear(); /* lone surrogates: pyarrow reports them */
                Py_RETURN_NONE;
            }
            total += size;
            if (total > INT32_MAX)
                Py_RETURN_NONE;
        }
        else if (!PyLong_CheckExact(v))
            Py_RETURN_NONE;
    }
    PyObject *validity = NULL, *offsets = NULL, *data = NULL;
    if (nulls) {
        validity = new_bytes((n + 7) / 8, 1);
        if (validity == NULL)
            return NULL;
    }
    unsigned char *bits = validity ? (unsigned char *)PyBytes_AS_STRING(validity) : NULL;
    if (width == 0) {
        offsets = new_bytes((n + 1) * 4, 0);
        data = offsets ? new_bytes(total, 0) : NULL;
        if (data == NULL)
            goto error;
        int32_t *off = (int32_t *)PyBytes_AS_STRING(offsets);
        char *out = PyBytes_AS_STRING(data);
        int32_t at = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *v = PyList_GET_ITEM(values, i);
            off[i] = at;
            if (v == Py_None)
                continue;
            if (bits)
                bits[i >> 3] |= (unsigned char)(1u << (i & 7));
            Py_ssize_t size;
            const char *text = PyUnicode_AsUTF8AndSize(v, &size); /* cached by the first pass */
            memcpy(out + at, text, size);
            at += (int32_t)size;
        }
        off[n] = at;
    }
    else {
        data = new_bytes(n * width, 1);
        if (data == NULL)
            goto error;
        char *out = PyBytes_AS_STRING(data);
        long long low = width == 8 ? INT64_MIN : -(1LL << (width * 8 - 1));
        long long high = width == 8 ? INT64_MAX : (1LL << (width * 8 - 1)) - 1;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *v = PyList_GET_ITEM(values, i);
            if (v == Py_None)
                continue;
            int overflow = 0;
            long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
            if (overflow || x < low || x > high) {
                Py_XDECREF(validity);
                Py_DECREF(data);
                Py_RETURN_NONE;
            }
            if (bits)
                bits[i >> 3] |= (unsigned char)(1u << (i & 7));
            if (width == 2) {
                int16_t y = (int16_t)x;
                memcpy(out + i * 2, &y, 2);
            }
            else if (width == 4) {
                int32_t y = (int32_t)x;
                memcpy(out + i * 4, &y, 4);
            }
            else
                memcpy(out + i * 8, &x, 8);
        }
        offsets = Py_NewRef(Py_None);
    }
    if (validity == NULL)
        validity = Py_NewRef(Py_None);
    return Py_BuildValue("NNNn", validity, offsets, data, nulls);
error:
    Py_XDECREF(validity);
    Py_XDECREF(offsets);
    Py_XDECREF(data);
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"arrow_buffers", arrow_buffers, METH_VARARGS, arrow_buffers_doc},
    {"unique_objects", unique_objects, METH_O, unique_objects_doc},
    {"release", release, METH_VARARGS, release_doc},
    {"columns", columns, METH_VARARGS, columns_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT,
    "recommender.ingest._hubble_scan",
    "The Hubble reader's hot loop in C; see recommender/ingest/hubble.py.",
    -1,
    module_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__hubble_scan(void)
{
    schema_t *schemas[] = {&flags_schema, &tcp_flags_schema, &tcp_schema, &udp_schema, &ports_schema,
                           &icmp_schema, &l4_schema, &flow_ip_schema, &ip_schema,
                           &service_schema, &http_schema, &dns_schema, &l7_schema,
                           &flow_schema, &line_schema};
    for (size_t k = 0; k < sizeof(schemas) / sizeof(schemas[0]); k++) {
        schemas[k]->lengths = 0;
        for (int i = 0; i < schemas[k]->n; i++)
            if (schemas[k]->fields[i].len < 32) /* longer names are always looked for */
                schemas[k]->lengths |= 1u << schemas[k]->fields[i].len;
    }
    if (PyType_Ready(&ScannerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    TCP_STR = PyUnicode_InternFromString("TCP");
    UDP_STR = PyUnicode_InternFromString("UDP");
    EMPTY_STR = PyUnicode_FromString("");
    WORKLOAD_STR = PyUnicode_InternFromString("workload");
    ALLOWED_STR = PyUnicode_InternFromString("allowed");
    HUBBLE_STR = PyUnicode_InternFromString("hubble");
    INGRESS_STR = PyUnicode_InternFromString("ingress");
    EGRESS_STR = PyUnicode_InternFromString("egress");
    POP_STR = PyUnicode_InternFromString("pop");
    ESTABLISHED_STR = PyUnicode_InternFromString("established");
    FAILED_STR = PyUnicode_InternFromString("failed");
    UNKNOWN_STR = PyUnicode_InternFromString("unknown");
    if (TCP_STR == NULL || UDP_STR == NULL || EMPTY_STR == NULL || WORKLOAD_STR == NULL ||
        ALLOWED_STR == NULL || HUBBLE_STR == NULL || INGRESS_STR == NULL || EGRESS_STR == NULL ||
        POP_STR == NULL || ESTABLISHED_STR == NULL || FAILED_STR == NULL || UNKNOWN_STR == NULL) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&ScannerType);
    if (PyModule_AddObject(m, "Scanner", (PyObject *)&ScannerType) < 0) {
        Py_DECREF(&ScannerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
