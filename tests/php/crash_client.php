<?php
// The portal filing requests while syncd keeps dying: every request is POSTed until it gets
// 202, always with its own Idempotency-Key, as docs/portal-contract.md section 10 says.
//   php crash_client.php SOCKET PLAN.json WORKDIR PAUSE_MS
// PLAN.json: [{"key", "device", "contact", "photo", "pdf"}] (paths of the request's files).
// Prints "filed N ID" per request, then "done".
declare(strict_types=1);
require __DIR__ . '/portal_examples.php';

[$script, $socket, $planFile, $work, $pauseMs] = $argv;
$plan = json_decode(file_get_contents($planFile), true, 16, JSON_THROW_ON_ERROR);
foreach ($plan as $number => $request) {
    $fields = ['request_type' => 'repair', 'message' => 'Filed while syncd restarts',
               'device_crm_id' => $request['device'], 'contact_crm_id' => $request['contact']];
    $files = [['path' => $request['photo'], 'name' => 'photo.jpg', 'type' => 'image/jpeg'],
              ['path' => $request['pdf'], 'name' => 'log.pdf', 'type' => 'application/pdf']];
    for ($attempt = 1; ; $attempt++) {
        try {
            [$status, $body] = syncd_file_service_request($socket, $request['key'], $fields, $files);
            if ($status === 202) {
                break;
            }
            if ($status < 500 && $status !== 429) {
                fwrite(STDERR, "refused: $status " . json_encode($body) . "\n");
                exit(1);
            }
        } catch (RuntimeException $e) {
            // syncd is down or restarting: keep the key, try again
        }
        if ($attempt >= 3000) {
            fwrite(STDERR, "gave up on request $number\n");
            exit(1);
        }
        usleep(50000);
    }
    echo "filed $number {$body['id']}\n";
    usleep((int) $pauseMs * 1000);
}
echo "done\n";
