<?php
// The portal as deployed, written from docs/portal-contract.md alone: it reads the cache
// read-only, finds it cannot write syncd's files, files service requests with a photo and a PDF
// through the local API (each POST sent twice, as a retry would), and waits until syncd has
// delivered them. Run as the portal's user (a member of group syncd).
//   php deployed_portal.php SOCKET CACHE WORKDIR COUNT
// Prints one JSON object.
declare(strict_types=1);
require __DIR__ . '/portal_examples.php';

[$script, $socket, $cache, $work, $count] = $argv;
$out = [];

// Reading: the cache, read-only, with its schema version checked.
$db = syncd_open($cache);
$page = syncd_read($db, function (PDO $db): array {
    $device = $db->query(
        'SELECT crm_id, company_id, contact_id FROM devices
         WHERE company_id IS NOT NULL AND contact_id IS NOT NULL ORDER BY crm_id LIMIT 1'
    )->fetch();
    return ['device' => $device, 'company' => syncd_company_page($db, $device['company_id'])];
});
$out['devices_on_company_page'] = count($page['company']['devices']);
$device = $page['device'];

// The withdrawn way of filing (SQL into the cache, files into the spool) must not work.
try {
    $writer = new PDO('sqlite:' . $cache, null, null, [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION]);
    $writer->exec("INSERT INTO outbox_requests (idempotency_key, request_type, created_at)
                   VALUES ('00000000-0000-4000-8000-000000000000', 'repair', 'x')");
    $out['sql_write'] = 'succeeded';
} catch (PDOException $e) {
    $out['sql_write'] = 'refused';
}
$out['spool_write'] = @file_put_contents(dirname($cache) . '/spool/x.jpg', 'x') === false
    ? 'refused' : 'succeeded';

// Filing: a photo and a PDF per request, each POST sent twice.
$photo = $work . '/upload-photo.tmp';
file_put_contents($photo, "\xff\xd8\xff\xe0\x00\x10JFIF\x00" . str_repeat("\x07", 50000));
$pdf = $work . '/upload-pdf.tmp';
file_put_contents($pdf, "%PDF-1.7\n" . str_repeat('0', 20000) . "\n%%EOF\n");
$out['requests'] = [];
for ($i = 0; $i < (int) $count; $i++) {
    $key = syncd_new_key();
    $fields = ['request_type' => 'repair', 'message' => 'The handpiece overheats',
               'device_crm_id' => $device['crm_id'], 'contact_crm_id' => $device['contact_id']];
    $files = [['path' => $photo, 'name' => "handpiece $i.jpg", 'type' => 'image/jpeg'],
              ['path' => $pdf, 'name' => 'service log.pdf', 'type' => 'application/pdf']];
    [$first, $answer] = syncd_file_service_request($socket, $key, $fields, $files);
    [$again, $replayed] = syncd_file_service_request($socket, $key, $fields, $files);
    $out['requests'][] = ['key' => $key, 'status' => $first, 'id' => $answer['id'] ?? null,
                          'retry_status' => $again, 'retry_id' => $replayed['id'] ?? null];
}

// Waiting for delivery: the API's status, and the cache (read-only) agrees.
$deadline = microtime(true) + 60;
foreach ($out['requests'] as &$request) {
    do {
        $status = syncd_service_request_status($socket, $request['key']);
        if ($status['status'] === 'done' || $status['status'] === 'dead') {
            break;
        }
        usleep(100000);
    } while (microtime(true) < $deadline);
    $request['final'] = $status['status'];
    $request['crm_id'] = $status['crm_id'];
    $row = syncd_read($db, function (PDO $db) use ($request): array {
        $query = $db->prepare('SELECT status, crm_id FROM outbox_requests WHERE idempotency_key = ?');
        $query->execute([$request['key']]);
        return $query->fetch();
    });
    $request['cache'] = $row;
}
unset($request);
echo json_encode($out), "\n";
