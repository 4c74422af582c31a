<?php
// Files a service request through the documented contract (docs/portal-contract.md, section 10):
// the local API over its unix socket, with php-curl.
//   php tests/php/file_request.php SOCKET KEY DEVICE_CRM_ID CONTACT_CRM_ID FILE [NAME [TYPE]]
// Prints one JSON line: {"status": HTTP status, "body": the decoded answer}.
declare(strict_types=1);
require __DIR__ . '/portal_examples.php';

[$script, $socket, $key, $device, $contact, $file] = $argv;
[$status, $body] = syncd_file_service_request(
    $socket, $key,
    ['request_type' => 'repair', 'message' => 'Laser stops after ten minutes',
     'contact_email' => 'client@example.ee', 'device_crm_id' => $device,
     'contact_crm_id' => $contact],
    [['path' => $file, 'name' => $argv[6] ?? 'handpiece.jpg', 'type' => $argv[7] ?? 'image/jpeg']]
);
echo json_encode(['status' => $status, 'body' => $body]), "\n";
