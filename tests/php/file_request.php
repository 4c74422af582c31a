<?php
// Files a service request through the documented contract (docs/portal-contract.md, section 10).
//   php tests/php/file_request.php CACHE_PATH KEY DEVICE_CRM_ID CONTACT_CRM_ID SPOOL_RELATIVE_PATH SIZE
// Prints one JSON line: {"id": N} (N null when the key was filed before).
declare(strict_types=1);
require __DIR__ . '/portal_examples.php';

[$script, $cache, $key, $device, $contact, $path, $size] = $argv;
$writer = new PDO('sqlite:' . $cache, null, null, [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION]);
$writer->exec('PRAGMA busy_timeout = 5000');
$id = syncd_file_service_request(
    $writer, $key, 'repair', 'Laser stops after ten minutes', $device, $contact,
    ['email' => 'client@example.ee'],
    [['path' => $path, 'original_name' => 'handpiece.jpg', 'declared_type' => 'image/jpeg',
      'size' => (int) $size]]
);
echo json_encode(['id' => $id]), "\n";
