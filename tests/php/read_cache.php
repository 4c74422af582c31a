<?php
// A portal-like reader of the syncd cache, using only docs/portal-contract.md and its examples
// (tests/php/portal_examples.php, which is the doc's PHP code verbatim).
//
//   php tests/php/read_cache.php CACHE_PATH [--loop SECONDS [--stop-file PATH]] [--expect-version N]
//
// Opens the cache read-only, checks the schema version, then in ONE read transaction reads the
// counts, checks the documented invariants (no dangling link, every JSON column a JSON array of
// the documented shape, enumerations, date and timestamp formats), runs the e-mail lookup and the
// company page examples, and prints one JSON line:
//   {"ok": true, "version": 1, "counts": {...}, "data_as_of": {...}, "last_run": 7, "checks": N}
// or {"ok": false, "error": "..."} with exit status 1. With --loop it repeats (a new connection
// and a new read transaction each time, like portal requests) for SECONDS seconds, printing one
// line per iteration with "iterations", and stops at the first violation, or early once the
// --stop-file exists (so a test can end the loop between two reads).
//
// It never prints personal data: only counts, run numbers, CRM IDs and column names.
declare(strict_types=1);

require __DIR__ . '/portal_examples.php';

const EXIT_VIOLATION = 1;
const EXIT_USAGE = 64;

const EMAIL_TYPES = ['work', 'personal', 'mailing', 'other'];
const PHONE_TYPES = ['work', 'mobile', 'personal', 'fax', 'mailing', 'other'];
const ADDRESS_TYPES = ['physical', 'registered', 'legal', 'mailing', 'beneficiary', 'shipping', 'other'];
const ADDRESS_KEYS = ['type', 'line1', 'line2', 'city', 'postal_code', 'region', 'country'];
const OWNERSHIP = ['owned', 'rental'];
const ENTITIES = ['companies', 'contacts', 'devices'];
const UTC_TIMESTAMP = '/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/';
const LINKS = [
    ['contacts', 'company_id', 'companies'],
    ['devices', 'company_id', 'companies'],
    ['devices', 'contact_id', 'contacts'],
];

final class Violation extends RuntimeException
{
}

final class Checker
{
    public int $checks = 0;

    public function check(bool $condition, string $what): void
    {
        $this->checks++;
        if (!$condition) {
            throw new Violation($what);
        }
    }
}

function emit(array $line): void
{
    echo json_encode($line, JSON_UNESCAPED_SLASHES), "\n";
    fflush(STDOUT);
}

function usage(string $message): never
{
    emit(['ok' => false, 'error' => 'usage: ' . $message]);
    exit(EXIT_USAGE);
}

function parse_args(array $argv): array
{
    $args = ['path' => null, 'loop' => null, 'stop' => null, 'expect' => SYNCD_KNOWN_SCHEMA_VERSIONS[0]];
    for ($i = 1; $i < count($argv); $i++) {
        $arg = $argv[$i];
        if ($arg === '--stop-file') {
            $args['stop'] = $argv[++$i] ?? usage('--stop-file needs a path');
        } elseif ($arg === '--loop' || $arg === '--expect-version') {
            $value = $argv[++$i] ?? usage("$arg needs a value");
            if (!is_numeric($value) || (float) $value < 0) {
                usage("$arg needs a non-negative number");
            }
            if ($arg === '--loop') {
                $args['loop'] = (float) $value;
            } else {
                $args['expect'] = (int) $value;
            }
        } elseif ($args['path'] === null && !str_starts_with($arg, '--')) {
            $args['path'] = $arg;
        } else {
            usage("unexpected argument $arg");
        }
    }
    if ($args['path'] === null) {
        usage('read_cache.php CACHE_PATH [--loop SECONDS [--stop-file PATH]] [--expect-version N]');
    }
    if ($args['stop'] !== null && $args['loop'] === null) {
        usage('--stop-file needs --loop');
    }
    return $args;
}

function is_date(mixed $value): bool
{
    return is_string($value)
        && preg_match('/^(\d{4})-(\d{2})-(\d{2})$/', $value, $m) === 1
        && checkdate((int) $m[2], (int) $m[3], (int) $m[1]);
}

function is_list_of_strings(mixed $value): bool
{
    if (!is_array($value) || !array_is_list($value)) {
        return false;
    }
    foreach ($value as $item) {
        if (!is_string($item) || $item === '') {
            return false;
        }
    }
    return count(array_unique($value)) === count($value);
}

/** The documented shape of one decoded JSON column. */
function check_json_shape(Checker $c, string $where, string $column, array $items): void
{
    $c->check(array_is_list($items), "$where: $column is a JSON object, not a list");
    foreach ($items as $n => $item) {
        $at = $where . ': ' . $column . '[' . $n . ']';
        switch ($column) {
            case 'emails':
            case 'phones':
                $types = $column === 'emails' ? EMAIL_TYPES : PHONE_TYPES;
                $c->check(is_array($item) && !array_is_list($item), "$at is not an object");
                $c->check(in_array($item['type'] ?? null, $types, true), "$at has an undocumented type");
                $c->check(
                    is_string($item['value'] ?? null) && trim($item['value']) === $item['value']
                        && $item['value'] !== '',
                    "$at has no trimmed, non-empty value"
                );
                break;
            case 'addresses':
                $c->check(is_array($item) && !array_is_list($item), "$at is not an object");
                $c->check(
                    array_diff(ADDRESS_KEYS, array_keys($item)) === [],
                    "$at lacks a documented key"
                );
                $c->check(in_array($item['type'], ADDRESS_TYPES, true), "$at has an undocumented type");
                $filled = 0;
                foreach (array_slice(ADDRESS_KEYS, 1) as $key) {
                    $c->check($item[$key] === null || is_string($item[$key]), "$at.$key is not text or null");
                    $filled += is_string($item[$key]) ? 1 : 0;
                }
                $c->check($filled > 0, "$at is empty");
                break;
            case 'languages':
                $c->check(
                    is_string($item) && preg_match('/^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$/', $item) === 1,
                    "$at is not an ISO 639 code"
                );
                break;
        }
    }
    if (in_array($column, ['languages', 'newsletters', 'handpieces'], true)) {
        $c->check(is_list_of_strings($items), "$where: $column is not a list of distinct strings");
    }
}

/** Every row of $table: types, formats, enumerations and JSON shapes. */
function check_rows(Checker $c, PDO $db, string $table): array
{
    $firstWithEmail = null;
    $ids = 0;
    foreach ($db->query("SELECT * FROM $table ORDER BY crm_id") as $row) {
        $id = $row['crm_id'];
        $c->check(is_string($id) && $id !== '', "$table: a row has no crm_id");
        $where = "$table $id";
        foreach (SYNCD_JSON_COLUMNS[$table] as $column) {
            try {
                $decoded = json_decode($row[$column], true, 512, JSON_THROW_ON_ERROR);
            } catch (JsonException $error) {
                throw new Violation("$where: $column is not valid JSON");
            }
            $c->check(is_array($decoded), "$where: $column is not a JSON array");
            check_json_shape($c, $where, $column, $decoded);
            if ($column === 'emails' && $decoded !== [] && $table === 'contacts' && $firstWithEmail === null) {
                $firstWithEmail = ['crm_id' => $id, 'email' => $decoded[0]['value']];
            }
        }
        $c->check($row['crm_updated_at'] === null || preg_match(UTC_TIMESTAMP, $row['crm_updated_at']) === 1,
            "$where: crm_updated_at is not a UTC timestamp");
        $c->check(is_string($row['synced_at']) && preg_match(UTC_TIMESTAMP, $row['synced_at']) === 1,
            "$where: synced_at is not a UTC timestamp");
        if ($table === 'companies') {
            $c->check($row['country'] === null || preg_match('/^[A-Z]{2}$/', $row['country']) === 1,
                "$where: country is not an ISO 3166-1 alpha-2 code");
        } elseif ($table === 'contacts') {
            $c->check($row['birth_date'] === null || is_date($row['birth_date']), "$where: birth_date is not YYYY-MM-DD");
        } else {
            $c->check($row['ownership'] === null || in_array($row['ownership'], OWNERSHIP, true),
                "$where: ownership is not owned, rental or NULL");
            $c->check($row['warranty_start'] === null || is_date($row['warranty_start']),
                "$where: warranty_start is not YYYY-MM-DD");
        }
        $ids++;
    }
    return ['rows' => $ids, 'first_with_email' => $firstWithEmail];
}

function count_of(PDO $db, string $sql, array $params = []): int
{
    $stmt = $db->prepare($sql);
    $stmt->execute($params);
    return (int) $stmt->fetchColumn();
}

/** One portal "request": everything in one read transaction. */
function inspect(PDO $db, Checker $c): array
{
    return syncd_read($db, function (PDO $db) use ($c): array {
        $counts = [];
        foreach (ENTITIES as $table) {
            $counts[$table] = count_of($db, "SELECT count(*) FROM $table");
        }
        foreach (LINKS as [$table, $column, $target]) {
            $dangling = $db->query(
                "SELECT t.crm_id FROM $table t WHERE t.$column IS NOT NULL AND NOT EXISTS "
                . "(SELECT 1 FROM $target x WHERE x.crm_id = t.$column) ORDER BY t.crm_id LIMIT 5"
            )->fetchAll(PDO::FETCH_COLUMN);
            $c->check($dangling === [], "$table.$column dangles in $table " . implode(', ', $dangling));
        }
        $scanned = [];
        foreach (ENTITIES as $table) {
            $scanned[$table] = check_rows($c, $db, $table);
            $c->check($scanned[$table]['rows'] === $counts[$table], "$table changed within one read transaction");
        }

        $asOf = syncd_data_as_of($db);
        foreach ($asOf['entities'] as $entity => $stamp) {
            $c->check(in_array($entity, ENTITIES, true), 'cursors holds an undocumented entity');
            $c->check(is_string($stamp) && preg_match(UTC_TIMESTAMP, $stamp) === 1, "cursor of $entity is not a timestamp");
        }
        $last = $asOf['last_cycle'];
        if ($last !== null) {
            $c->check(preg_match(UTC_TIMESTAMP, (string) $last['finished_at']) === 1, 'sync_runs.finished_at is not a timestamp');
        }

        // The e-mail lookup finds the contact the address came from, and only contacts having it.
        $probe = $scanned['contacts']['first_with_email'];
        if ($probe !== null) {
            $variants = [$probe['email']];
            if (preg_match('/^[\x20-\x7E]+$/', $probe['email']) === 1) {
                $variants[] = strtoupper($probe['email']); // COLLATE NOCASE
            }
            $found = null;
            foreach ($variants as $variant) {
                $hits = syncd_find_contacts_by_email($db, $variant);
                $hitIds = array_column($hits, 'crm_id');
                $c->check(in_array($probe['crm_id'], $hitIds, true), "e-mail lookup misses contact {$probe['crm_id']}");
                foreach ($hits as $hit) {
                    $values = array_map('strtolower', array_column($hit['emails'], 'value'));
                    $c->check(in_array(strtolower($probe['email']), $values, true),
                        "e-mail lookup returned contact {$hit['crm_id']} without the address");
                }
                $c->check($found === null || $found === $hitIds, 'e-mail lookup depends on ASCII case');
                $found = $hitIds;
            }
        }

        // The company page of a company with devices (or any company), and of a missing one.
        $companyId = $db->query(
            'SELECT company_id FROM devices WHERE company_id IS NOT NULL ORDER BY crm_id LIMIT 1'
        )->fetchColumn();
        if ($companyId === false) {
            $companyId = $db->query('SELECT crm_id FROM companies ORDER BY crm_id LIMIT 1')->fetchColumn();
        }
        $page = null;
        if ($companyId !== false) {
            $page = syncd_company_page($db, $companyId);
            $c->check($page !== null && $page['company']['crm_id'] === $companyId, "company page of $companyId is missing");
            foreach (['contacts', 'devices'] as $table) {
                $expected = count_of($db, "SELECT count(*) FROM $table WHERE company_id = ?", [$companyId]);
                $c->check(count($page[$table]) === $expected, "company page of $companyId lists the wrong $table");
                foreach ($page[$table] as $row) {
                    $c->check($row['company_id'] === $companyId, "company page of $companyId lists {$row['crm_id']} of another company");
                    foreach (SYNCD_JSON_COLUMNS[$table] as $column) {
                        $c->check(is_array($row[$column]), "company page: $table {$row['crm_id']} $column not decoded");
                    }
                }
            }
        }
        $c->check(syncd_company_page($db, 'no-such-company') === null, 'company page of a missing company is not null');

        return [
            'counts' => $counts,
            'data_as_of' => $asOf['entities'],
            'oldest' => $asOf['oldest'],
            'last_run' => $last === null ? null : (int) $last['id'],
            'company_page' => $page === null ? null : [
                'company' => $companyId,
                'contacts' => count($page['contacts']),
                'devices' => count($page['devices']),
            ],
        ];
    });
}

function run_once(string $path, int $expect): array
{
    $c = new Checker();
    $db = syncd_open($path, [$expect]);
    $c->check(true, 'schema version'); // syncd_open refuses any other version
    $result = inspect($db, $c);
    $db = null;
    return ['ok' => true, 'version' => $expect] + $result + ['checks' => $c->checks];
}

$args = parse_args($argv);
$deadline = $args['loop'] === null ? null : microtime(true) + $args['loop'];
$iterations = 0;
do {
    $iterations++;
    $started = microtime(true);
    try {
        $line = run_once($args['path'], $args['expect']);
    } catch (Throwable $error) {
        // Messages name IDs and columns only (Violation) or come from PDO/SQLite (no row data).
        $line = ['ok' => false, 'error' => $error->getMessage()];
    }
    if ($deadline !== null) {
        $line['iterations'] = $iterations;
        $line['ms'] = round((microtime(true) - $started) * 1000, 1);
    }
    emit($line);
    if (!$line['ok']) {
        exit(EXIT_VIOLATION);
    }
    if ($deadline !== null) {
        usleep(20_000); // a portal does not hammer the cache; leave the writer room to checkpoint
    }
} while (
    $deadline !== null && microtime(true) < $deadline
    && ($args['stop'] === null || !file_exists($args['stop']))
);
exit(0);
