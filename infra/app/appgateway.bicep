// Application Gateway v2 in front of the Function App: public IP with a DNS label
// (<label>.<region>.cloudapp.azure.com, the name apps call), an HTTPS listener on 443 with a Key Vault
// certificate or, without one, an HTTP listener on 80 (gateway keys then cross the network in clear text),
// one backend (the Function App's default host name) with a liveness probe on /healthz, and an optional WAF
// policy (WAF_v2).

@description('Name of the Application Gateway.')
param name string

@description('Name of its public IP address.')
param publicIpName string

@description('Name of the WAF policy (attached when enableWaf is true).')
param wafPolicyName string

@description('Azure region of the gateway.')
param location string

@description('Tags applied to every resource.')
param tags object = {}

@description('Resource id of the dedicated Application Gateway subnet.')
param subnetId string

@description('Default host name of the Function App (<app>.azurewebsites.net): the single backend.')
param functionAppHostName string

@description('DNS label of the public IP: the gateway answers at <label>.<region>.cloudapp.azure.com.')
@minLength(3)
@maxLength(63)
param dnsLabel string

@description('Resource id of the gateway user-assigned identity (reads the TLS certificate from Key Vault).')
param identityId string

@description('Versionless Key Vault secret id of the TLS certificate (https://<vault>.vault.azure.net/secrets/<name>); empty serves plain HTTP only.')
param certificateSecretId string = ''

@description('Listen on port 80: required without a certificate; with one, port 80 only redirects to HTTPS.')
param serveHttp bool = true

@description('Use the WAF_v2 SKU with an OWASP 3.2 policy instead of Standard_v2.')
param enableWaf bool = false

@description('WAF mode: Detection only logs (the default), Prevention blocks.')
@allowed([
  'Detection'
  'Prevention'
])
param wafMode string = 'Detection'

@description('Seconds the gateway waits for the backend. 230 s matches the Functions HTTP front-end limit, enough for long streamed answers.')
@minValue(30)
@maxValue(3600)
param requestTimeoutSeconds int = 230

@description('Minimum instances (0 = no reserved capacity units, the cheapest at rest; 2+ for production latency).')
@minValue(0)
@maxValue(125)
param minCapacity int = 0

@description('Maximum instances for autoscaling.')
@minValue(2)
@maxValue(125)
param maxCapacity int = 10

@description('Availability zones of the gateway and its public IP (for example 1, 2 and 3); empty for regions without zones.')
param zones array = []

@description('Resource id of the Log Analytics workspace receiving access, performance and firewall logs.')
param logAnalyticsWorkspaceId string

var hasCertificate = !empty(certificateSecretId)
var redirectsHttp = hasCertificate && serveHttp
var skuName = enableWaf ? 'WAF_v2' : 'Standard_v2'
var gatewayId = resourceId('Microsoft.Network/applicationGateways', name)

var frontendIpId = '${gatewayId}/frontendIPConfigurations/public-frontend'
var httpListenerId = '${gatewayId}/httpListeners/http-listener'
var httpsListenerId = '${gatewayId}/httpListeners/https-listener'
var backendPoolId = '${gatewayId}/backendAddressPools/function-app'
var backendSettingsId = '${gatewayId}/backendHttpSettingsCollection/function-app-https'
var probeId = '${gatewayId}/probes/healthz'

var port80 = {
  name: 'port-80'
  properties: {
    port: 80
  }
}
var port443 = {
  name: 'port-443'
  properties: {
    port: 443
  }
}

var httpListener = {
  name: 'http-listener'
  properties: {
    frontendIPConfiguration: {
      id: frontendIpId
    }
    frontendPort: {
      id: '${gatewayId}/frontendPorts/port-80'
    }
    protocol: 'Http'
  }
}
var httpsListener = {
  name: 'https-listener'
  properties: {
    frontendIPConfiguration: {
      id: frontendIpId
    }
    frontendPort: {
      id: '${gatewayId}/frontendPorts/port-443'
    }
    protocol: 'Https'
    sslCertificate: {
      id: '${gatewayId}/sslCertificates/gateway-certificate'
    }
  }
}

// Every request goes to the Function App; with a certificate the HTTPS listener serves it.
var forwardRule = {
  name: 'forward-to-function'
  properties: {
    ruleType: 'Basic'
    priority: 100
    httpListener: {
      id: hasCertificate ? httpsListenerId : httpListenerId
    }
    backendAddressPool: {
      id: backendPoolId
    }
    backendHttpSettings: {
      id: backendSettingsId
    }
  }
}
// With a certificate and serveHttp, port 80 only redirects. 307 keeps the method and body (301 would turn a
// POST into a GET). Clients should still call https directly: the key was already sent before the redirect.
var redirectRule = {
  name: 'http-to-https'
  properties: {
    ruleType: 'Basic'
    priority: 200
    httpListener: {
      id: httpListenerId
    }
    redirectConfiguration: {
      id: '${gatewayId}/redirectConfigurations/http-to-https'
    }
  }
}

resource publicIp 'Microsoft.Network/publicIPAddresses@2024-05-01' = {
  name: publicIpName
  location: location
  tags: tags
  zones: zones
  sku: {
    name: 'Standard'
    tier: 'Regional'
  }
  properties: {
    publicIPAllocationMethod: 'Static'
    publicIPAddressVersion: 'IPv4'
    dnsSettings: {
      domainNameLabel: dnsLabel
    }
  }
}

// The policy is free and always created (so the scanners see it); it is attached only to a WAF_v2 gateway.
resource wafPolicy 'Microsoft.Network/ApplicationGatewayWebApplicationFirewallPolicies@2024-05-01' = {
  name: wafPolicyName
  location: location
  tags: tags
  properties: {
    policySettings: {
      state: 'Enabled'
      mode: wafMode
      // Prompts are large JSON bodies (a 128K-token context is ~500 KB; images travel base64 inline).
      // Inspect the first 128 KB of every body, where injection attempts against the gateway would sit,
      // but do not reject bigger bodies: the gateway answers 413 itself, in the OpenAI error shape.
      requestBodyCheck: true
      requestBodyInspectLimitInKB: 128
      requestBodyEnforcement: false
      maxRequestBodySizeInKb: 2000
      // Audio transcription uploads are multipart files (the service accepts up to 25 MB).
      fileUploadEnforcement: true
      fileUploadLimitInMb: 100
    }
    managedRules: {
      // OWASP CRS 3.2. Prompts that contain code or SQL can trip SQLi/XSS rules: start in Detection,
      // read the firewall log, then add exclusions before switching to Prevention.
      managedRuleSets: [
        {
          ruleSetType: 'OWASP'
          ruleSetVersion: '3.2'
        }
      ]
    }
  }
}

resource applicationGateway 'Microsoft.Network/applicationGateways@2024-05-01' = {
  //checkov:skip=CKV_AZURE_218: the HTTP listener is the only listener until a TLS certificate is configured (certificateSecretId); then port 80 is off, or only redirects when serveHttp is set.
  name: name
  location: location
  tags: tags
  zones: zones
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    sku: {
      name: skuName
      tier: skuName
    }
    autoscaleConfiguration: {
      minCapacity: minCapacity
      maxCapacity: maxCapacity
    }
    enableHttp2: true
    sslPolicy: {
      policyType: 'Predefined'
      policyName: 'AppGwSslPolicy20220101S'
    }
    // Streamed answers (server-sent events) must reach the client token by token: no response buffering.
    // Request buffering stays on (required by WAF_v2).
    globalConfiguration: {
      enableRequestBuffering: true
      enableResponseBuffering: false
    }
    firewallPolicy: enableWaf ? {
      id: wafPolicy.id
    } : null
    gatewayIPConfigurations: [
      {
        name: 'gateway-subnet'
        properties: {
          subnet: {
            id: subnetId
          }
        }
      }
    ]
    frontendIPConfigurations: [
      {
        name: 'public-frontend'
        properties: {
          publicIPAddress: {
            id: publicIp.id
          }
        }
      }
    ]
    frontendPorts: concat(serveHttp ? [
      port80
    ] : [], hasCertificate ? [
      port443
    ] : [])
    sslCertificates: hasCertificate ? [
      {
        name: 'gateway-certificate'
        properties: {
          keyVaultSecretId: certificateSecretId
        }
      }
    ] : []
    backendAddressPools: [
      {
        name: 'function-app'
        properties: {
          backendAddresses: [
            {
              fqdn: functionAppHostName
            }
          ]
        }
      }
    ]
    backendHttpSettingsCollection: [
      {
        name: 'function-app-https'
        properties: {
          port: 443
          protocol: 'Https'
          // Off: the Function App balances every request across regions by load, and any instance
          // serves any caller (shared state is in Table Storage), so stickiness would only skew load.
          cookieBasedAffinity: 'Disabled'
          // Send Host: <app>.azurewebsites.net, the name App Service routes and its certificate matches.
          pickHostNameFromBackendAddress: true
          requestTimeout: requestTimeoutSeconds
          probe: {
            id: probeId
          }
        }
      }
    ]
    probes: [
      {
        name: 'healthz'
        properties: {
          protocol: 'Https'
          path: '/healthz'
          interval: 30
          timeout: 30
          unhealthyThreshold: 3
          pickHostNameFromBackendHttpSettings: true
          match: {
            statusCodes: [
              '200-399'
            ]
          }
        }
      }
    ]
    httpListeners: concat(serveHttp ? [
      httpListener
    ] : [], hasCertificate ? [
      httpsListener
    ] : [])
    redirectConfigurations: redirectsHttp ? [
      {
        name: 'http-to-https'
        properties: {
          redirectType: 'Temporary'
          targetListener: {
            id: httpsListenerId
          }
          includePath: true
          includeQueryString: true
        }
      }
    ] : []
    requestRoutingRules: concat([
      forwardRule
    ], redirectsHttp ? [
      redirectRule
    ] : [])
  }
}

resource gatewayDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'gateway-to-log-analytics'
  scope: applicationGateway
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output name string = applicationGateway.name
output fqdn string = publicIp.properties.dnsSettings.fqdn
output publicIpAddress string = publicIp.properties.ipAddress
