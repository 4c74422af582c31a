<?php
// Where a service request stands, as the portal shows it (docs/portal-contract.md, section 10).
//   php tests/php/request_status.php CACHE_PATH IDEMPOTENCY_KEY   -> one JSON line
declare(strict_types=1);
require __DIR__ . '/portal_examples.php';

[$script, $cache, $key] = $argv;
$db = syncd_open($cache);
$query = $db->prepare(
    'SELECT status, crm_id, last_error,
            (SELECT count(*) FROM outbox_files f WHERE f.request_id = r.id) AS files
     FROM outbox_requests r WHERE idempotency_key = ?'
);
$query->execute([strtolower($key)]);
echo json_encode($query->fetch(PDO::FETCH_ASSOC)), "\n";
