<?php
declare(strict_types=1);

/** Schema versions of the syncd cache this portal code knows (docs/portal-contract.md, section 2). */
const SYNCD_KNOWN_SCHEMA_VERSIONS = [6];

/** The JSON columns of the tables the portal reads; each holds a JSON array. */
const SYNCD_JSON_COLUMNS = [
    'companies' => ['addresses', 'phones', 'emails'],
    'contacts' => ['emails', 'phones', 'languages', 'addresses', 'newsletters'],
    'devices' => ['handpieces'],
];

/**
 * Open the syncd cache read-only, with a busy timeout, and refuse unknown schema versions.
 *
 * @param int[] $knownVersions
 */
function syncd_open(string $path, array $knownVersions = SYNCD_KNOWN_SCHEMA_VERSIONS): PDO
{
    if (!is_file($path)) {
        // is_file() is also false when the directory is not readable: check the group first.
        throw new RuntimeException(
            'the syncd cache is missing or not accessible (has syncd run? is PHP in group syncd?)'
        );
    }
    $options = [
        PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
        PDO::ATTR_DEFAULT_FETCH_MODE => PDO::FETCH_ASSOC,
    ];
    if (defined('PDO::SQLITE_ATTR_OPEN_FLAGS')) {
        $options[PDO::SQLITE_ATTR_OPEN_FLAGS] = PDO::SQLITE_OPEN_READONLY;
    }
    $db = new PDO('sqlite:' . $path, null, null, $options);
    $db->exec('PRAGMA busy_timeout = 5000');
    $version = (int) $db->query('PRAGMA user_version')->fetchColumn();
    if (!in_array($version, $knownVersions, true)) {
        throw new RuntimeException(sprintf(
            'the syncd cache has schema version %d; this portal knows version(s) %s',
            $version,
            implode(', ', $knownVersions)
        ));
    }
    return $db;
}

/**
 * Run $work inside one read transaction: every query it makes sees the same snapshot.
 */
function syncd_read(PDO $db, callable $work): mixed
{
    $db->beginTransaction();
    try {
        $result = $work($db);
    } catch (Throwable $error) {
        $db->rollBack();
        throw $error;
    }
    $db->commit(); // ends the read transaction and releases the snapshot; nothing is written
    return $result;
}

/** Decode the JSON columns of a row of $table into PHP arrays. */
function syncd_decode(string $table, array $row): array
{
    foreach (SYNCD_JSON_COLUMNS[$table] as $column) {
        if (array_key_exists($column, $row)) {
            $row[$column] = json_decode($row[$column], true, 512, JSON_THROW_ON_ERROR);
        }
    }
    return $row;
}

/** Devices of a company, JSON columns decoded. Call inside syncd_read(). */
function syncd_company_devices(PDO $db, string $companyId): array
{
    $stmt = $db->prepare(
        'SELECT * FROM devices WHERE company_id = :id ORDER BY brand, model, serial_number, crm_id'
    );
    $stmt->execute([':id' => $companyId]);
    return array_map(fn (array $row): array => syncd_decode('devices', $row), $stmt->fetchAll());
}

/**
 * A contacts row for display: JSON columns decoded, 'restricted' as a bool. Show a restricted
 * contact marked as such ("processing restricted"), use their data for nothing new, and do not
 * offer the service request form for them (section 10: syncd refuses the request).
 */
function syncd_contact_row(array $row): array
{
    $row = syncd_decode('contacts', $row);
    $row['restricted'] = (int) $row['restricted'] === 1;
    return $row;
}

/**
 * Whether the contact's processing is restricted (contacts.restricted); false for a contact the
 * cache does not have. Ask before offering the service request form. Call inside syncd_read().
 */
function syncd_contact_restricted(PDO $db, string $contactId): bool
{
    $stmt = $db->prepare('SELECT restricted FROM contacts WHERE crm_id = :id');
    $stmt->execute([':id' => $contactId]);
    return (int) $stmt->fetchColumn() === 1;
}

/** A company with its contacts and devices, or null if the cache does not have it. */
function syncd_company_page(PDO $db, string $companyId): ?array
{
    $stmt = $db->prepare('SELECT * FROM companies WHERE crm_id = :id');
    $stmt->execute([':id' => $companyId]);
    $company = $stmt->fetch();
    if ($company === false) {
        return null;
    }
    $stmt = $db->prepare(
        'SELECT * FROM contacts WHERE company_id = :id ORDER BY last_name, first_name, crm_id'
    );
    $stmt->execute([':id' => $companyId]);
    return [
        'company' => syncd_decode('companies', $company),
        'contacts' => array_map('syncd_contact_row', $stmt->fetchAll()),
        'devices' => syncd_company_devices($db, $companyId),
    ];
}

// Usage, e.g. in a controller:
//   $db = syncd_open('/var/lib/syncd/cache.sqlite3');
//   $page = syncd_read($db, fn (PDO $db) => [
//       'page' => syncd_company_page($db, $companyId),
//       'data_as_of' => syncd_data_as_of($db),
//   ]);
//   Each of $page['page']['contacts'] has 'restricted' (a bool): mark those contacts, and
//   leave them out of the service request form.

/**
 * Contacts having $email among their e-mail addresses (any type), as syncd_contact_row()
 * returns them. Call inside syncd_read().
 */
function syncd_find_contacts_by_email(PDO $db, string $email): array
{
    $stmt = $db->prepare(<<<'SQL'
        SELECT c.* FROM contacts c
        WHERE EXISTS (
            SELECT 1 FROM json_each(c.emails) e
            WHERE json_extract(e.value, '$.value') = :email COLLATE NOCASE
        )
        ORDER BY c.crm_id
        SQL);
    $stmt->execute([':email' => trim($email)]);
    return array_map('syncd_contact_row', $stmt->fetchAll());
}

/**
 * "Data as of" per entity (UTC, the CRM's clock), and the last committed cycle.
 * An entity missing from 'entities' has not been mirrored yet.
 */
function syncd_data_as_of(PDO $db): array
{
    $entities = $db->query(<<<'SQL'
        SELECT entity, strftime('%Y-%m-%dT%H:%M:%SZ', value) FROM cursors ORDER BY entity
        SQL)->fetchAll(PDO::FETCH_KEY_PAIR);
    $last = $db->query(
        'SELECT id, kind, finished_at FROM sync_runs ORDER BY id DESC LIMIT 1'
    )->fetch();
    return [
        'entities' => $entities,
        'oldest' => $entities ? min($entities) : null,
        'last_cycle' => $last === false ? null : $last,
    ];
}

/**
 * Omniva's locations in one country (ISO code, e.g. 'EE'), ordered by name; $kind is
 * 'parcel_machine', 'post_office' or null for both. Empty until syncd loaded the first list
 * (omniva_list.record_count = 0). A machine whose state is 'overfilled' is full for the time
 * being: hide it, or show it with state_note as a label.
 */
function syncd_parcel_machines(PDO $db, string $country, ?string $kind = 'parcel_machine'): array
{
    $query = $db->prepare(<<<'SQL'
        SELECT location_id, name, kind, town, street, house_number, latitude, longitude,
            state, state_note
        FROM parcel_machines
        WHERE country = :country AND (:kind IS NULL OR kind = :kind)
        ORDER BY name, location_id
        SQL);
    $query->execute([':country' => strtoupper($country), ':kind' => $kind]);
    return $query->fetchAll(PDO::FETCH_ASSOC);
}

/**
 * A new idempotency key: a random (version 4) UUID. Make one per service request, when the
 * form is opened, and send it with every attempt to file that request.
 */
function syncd_new_key(): string
{
    $bytes = random_bytes(16);
    $bytes[6] = chr((ord($bytes[6]) & 0x0f) | 0x40);
    $bytes[8] = chr((ord($bytes[8]) & 0x3f) | 0x80);
    return vsprintf('%s%s-%s-%s-%s-%s%s%s', str_split(bin2hex($bytes), 4));
}

/**
 * Call syncd's local API over its unix socket (php-curl). Returns [HTTP status, decoded JSON
 * body]; error answers are JSON too. Throws RuntimeException when syncd cannot be reached or
 * did not answer in time: try again later (a POST with the same Idempotency-Key).
 */
function syncd_api_call(string $socket, string $method, string $path, array $options = []): array
{
    $curl = curl_init('http://localhost' . $path);
    curl_setopt_array($curl, $options + [
        CURLOPT_UNIX_SOCKET_PATH => $socket,
        CURLOPT_CUSTOMREQUEST => $method,
        CURLOPT_RETURNTRANSFER => true,
        CURLOPT_CONNECTTIMEOUT => 5,
        CURLOPT_TIMEOUT => 30,
    ]);
    $body = curl_exec($curl);
    $status = (int) curl_getinfo($curl, CURLINFO_RESPONSE_CODE);
    $error = curl_error($curl);
    curl_close($curl);
    if ($body === false || $status === 0) {
        throw new RuntimeException('syncd API unreachable: ' . $error);
    }
    return [$status, json_decode($body, true, 16, JSON_THROW_ON_ERROR)];
}

/**
 * File a service request with its files. $fields: 'request_type' (required), 'message',
 * 'contact_phone', 'contact_email', 'contact_address', 'device_crm_id', 'contact_crm_id'.
 * $files: arrays with 'path' (a local file, e.g. $_FILES['photo']['tmp_name']), 'name' (the
 * client's file name) and 'type' (the browser's MIME type). Returns [status, body]: 202 with
 * 'id' and 'status_url'; a 4xx with body['error']['field'] naming the field or file to correct;
 * 429/503/507 mean "later, with the same key".
 */
function syncd_file_service_request(string $socket, string $key, array $fields,
                                    array $files): array
{
    $post = [];
    foreach ($fields as $name => $value) {
        if ($value !== null && $value !== '') {
            $post[$name] = (string) $value;
        }
    }
    foreach (array_values($files) as $position => $file) {
        $post["files[$position]"] = new CURLFile(
            $file['path'], $file['type'] ?? 'application/octet-stream',
            $file['name'] ?? basename($file['path'])
        );
    }
    return syncd_api_call($socket, 'POST', '/v1/service-requests', [
        CURLOPT_POSTFIELDS => $post,
        CURLOPT_HTTPHEADER => ['Idempotency-Key: ' . $key, 'Expect:'],
        CURLOPT_TIMEOUT => 900, // several hundred megabytes of video over a local socket
    ]);
}

/** Where a filed request stands (status, attempts, last_error, crm_id, files), or null. */
function syncd_service_request_status(string $socket, string $key): ?array
{
    [$status, $body] = syncd_api_call($socket, 'GET', '/v1/service-requests/' . rawurlencode($key));
    if ($status === 404) {
        return null;
    }
    if ($status !== 200) {
        throw new RuntimeException($body['error']['code'] ?? 'unexpected answer');
    }
    return $body;
}

/**
 * GET a path of syncd's local API over loopback TCP ($base like 'http://127.0.0.1:8787').
 * Returns [HTTP status, decoded JSON body]; errors are JSON too.
 */
function syncd_api_get(string $base, string $path, float $timeout = 25.0): array
{
    $context = stream_context_create(['http' => [
        'method' => 'GET', 'timeout' => $timeout, 'ignore_errors' => true,
        'header' => "Accept: application/json\r\n",
    ]]);
    $body = @file_get_contents($base . $path, false, $context);
    if ($body === false) {
        throw new RuntimeException('syncd API unreachable');
    }
    $status = (int) explode(' ', $http_response_header[0] ?? 'HTTP/1.1 0')[1];
    return [$status, json_decode($body, true, 16, JSON_THROW_ON_ERROR)];
}

/** "Verify VAT": the API's answer, or null when it cannot be verified right now (503). */
function syncd_verify_vat(string $base, string $number): ?array
{
    [$status, $answer] = syncd_api_get($base, '/v1/vat/' . rawurlencode($number));
    if ($status === 200) {
        return $answer;
    }
    if ($status === 503) {
        return null;
    }
    throw new InvalidArgumentException($answer['error']['code'] ?? 'unexpected answer');
}

/**
 * The documents of device $deviceId (`devices.crm_id`) that a user holding $permissions may
 * see: $permissions are the libraries' permission keys the portal grants that user. Files only,
 * ordered by library, folder and name. Call inside syncd_read().
 *
 * @param string[] $permissions
 */
function syncd_device_documents(PDO $db, string $deviceId, array $permissions): array
{
    $permissions = array_values(array_unique(array_map('strval', $permissions)));
    if ($permissions === []) {
        return [];
    }
    $marks = implode(', ', array_fill(0, count($permissions), '?'));
    $query = $db->prepare(
        'SELECT document_id, library, name, folder_path, size, mime_type, modified_at'
        . ' FROM device_documents WHERE device_id = ? AND permission IN (' . $marks . ')'
        . ' ORDER BY library, folder_path, name, document_id'
    );
    $query->execute([$deviceId, ...$permissions]);
    return $query->fetchAll(PDO::FETCH_ASSOC);
}

/** Where this portal finds syncd's cache and its local API (sections 1 and 12). */
const SYNCD_CACHE_PATH = '/var/lib/syncd/cache.sqlite3';
const SYNCD_API_SOCKET = '/run/syncd/api.sock';

/** The headers of a download that are passed on to the browser. */
const SYNCD_DOWNLOAD_HEADERS = [
    'content-type', 'content-length', 'content-range', 'accept-ranges', 'etag', 'last-modified',
    'content-disposition', 'x-content-type-options', 'cache-control',
];

/**
 * Send document $documentId to the browser if a user holding $userPermissions may see it.
 *
 * The cache decides first: 404 for a document it does not list as a file in scope, 403 when
 * the user lacks the library's permission; syncd's API is then not called at all. Otherwise
 * GET /v1/documents/{id}/download is relayed as it arrives: status, headers, and the bytes
 * chunk by chunk (never the whole file in memory); the browser's Range (and HEAD) pass
 * through. Call it before any output. Returns the HTTP status sent to the browser; a transfer
 * that breaks off mid-way ends short of its Content-Length, which the browser reports.
 *
 * @param string[] $userPermissions
 */
function stream_document(string $documentId, array $userPermissions,
                         string $cachePath = SYNCD_CACHE_PATH,
                         string $socket = SYNCD_API_SOCKET): int
{
    if (preg_match('/^[A-Za-z0-9!_-]{1,256}$/D', $documentId) !== 1) {
        return syncd_download_refused(404, 'No such document.');
    }
    $db = syncd_open($cachePath);
    $query = $db->prepare(<<<'SQL'
        SELECT l.permission FROM documents AS d
        JOIN document_libraries AS l ON l.name = d.library
        WHERE d.id = :id AND d.kind = 'file' AND d.in_scope = 1
        SQL);
    $query->execute([':id' => $documentId]);
    $permission = $query->fetchColumn();
    $query = $db = null; // hold no cache connection during the transfer
    if ($permission === false) {
        return syncd_download_refused(404, 'No such document.');
    }
    if (!in_array($permission, $userPermissions, true)) {
        return syncd_download_refused(403, 'You may not download this document.');
    }

    while (ob_get_level() > 0) {
        ob_end_clean(); // no output buffer may collect the file
    }
    $request = [];
    // syncd does not evaluate If-Range: a range of a file that may have changed is not asked
    // for, the whole file is sent instead (as RFC 9110 allows).
    if (isset($_SERVER['HTTP_RANGE']) && !isset($_SERVER['HTTP_IF_RANGE'])) {
        $request[] = 'Range: ' . $_SERVER['HTTP_RANGE'];
    }
    $status = 0;
    $headers = [];
    $curl = curl_init('http://localhost/v1/documents/' . rawurlencode($documentId) . '/download');
    curl_setopt_array($curl, [
        CURLOPT_UNIX_SOCKET_PATH => $socket,
        CURLOPT_HTTPHEADER => $request,
        CURLOPT_NOBODY => ($_SERVER['REQUEST_METHOD'] ?? 'GET') === 'HEAD',
        CURLOPT_CONNECTTIMEOUT => 5,
        CURLOPT_LOW_SPEED_LIMIT => 1, // give up on a transfer stalled for a minute,
        CURLOPT_LOW_SPEED_TIME => 60, // never on a long one
        CURLOPT_HEADERFUNCTION => function ($curl, string $line) use (&$status, &$headers): int {
            if (preg_match('#^HTTP/[0-9.]+ ([0-9]{3})#', $line, $match) === 1) {
                [$status, $headers] = [(int) $match[1], []];
            } elseif (str_contains($line, ':')) {
                [$name, $value] = explode(':', $line, 2);
                $headers[strtolower(trim($name))] = trim($name) . ': ' . trim($value);
            } elseif (trim($line) === '' && $status >= 200 && $status < 300) {
                http_response_code($status); // the headers are complete: pass them on
                foreach (array_intersect_key($headers, array_flip(SYNCD_DOWNLOAD_HEADERS)) as $h) {
                    header($h);
                }
            }
            return strlen($line);
        },
        CURLOPT_WRITEFUNCTION => function ($curl, string $chunk) use (&$status): int {
            if ($status >= 200 && $status < 300) {
                echo $chunk;
                flush();
            }
            return strlen($chunk); // an error's JSON body is not passed on
        },
    ]);
    curl_exec($curl);
    curl_close($curl);
    if ($status >= 200 && $status < 300) {
        return $status;
    }
    return match (true) {
        $status === 404 => syncd_download_refused(404, 'No such document.'),
        $status === 416 => syncd_download_refused(
            416, 'The requested range is outside the document.', [$headers['content-range'] ?? '']
        ),
        $status === 503, $status === 0 => syncd_download_refused(
            503, 'Documents cannot be fetched right now; try again later.',
            [$headers['retry-after'] ?? 'Retry-After: 60']
        ),
        default => syncd_download_refused(502, 'The document cannot be fetched right now.'),
    };
}

/** Answer the browser with $status and a short text (and the $headers given). */
function syncd_download_refused(int $status, string $message, array $headers = []): int
{
    http_response_code($status);
    header('Content-Type: text/plain; charset=utf-8');
    header('Cache-Control: no-store');
    foreach (array_filter($headers) as $header) {
        header($header);
    }
    echo $message, "\n";
    return $status;
}
